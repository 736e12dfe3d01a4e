"""Triton kernels of fieldpress.cuda. Importing anything here imports triton: reach it via `_backend.kernels`."""
