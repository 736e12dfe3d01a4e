"""Triton kernels of fieldpress.cuda; importing any of them imports triton (reach them via `_backend.kernels`)."""
