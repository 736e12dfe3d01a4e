"""Triton kernels of fieldpress.cuda; importing one imports triton (reach them via `_backend.kernels`)."""
