"""Public vector-quantization ops (k-means assignment and update): Triton on CUDA, the reference elsewhere.

VecTree / LightGaussian's k-means call `vq_assign` and `vq_update`; the semantics are in `vq_ref`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import vq_ref as ref
from ._backend import kernels, use_triton

MAX_KERNEL_DIM = 128  # wider vectors take the reference (the kernels keep a padded row in registers)


@torch.library.custom_op("fieldpress::vq_assign", mutates_args=())
def _vq_assign(x: Tensor, codebook: Tensor) -> tuple[Tensor, Tensor]:
    if x.shape[1] <= MAX_KERNEL_DIM and use_triton(x, codebook):
        return kernels("vq").vq_assign(x, codebook)
    with torch.no_grad():
        return ref.vq_assign_ref(x, codebook)


@_vq_assign.register_fake
def _(x, codebook):
    n = x.shape[0]
    return x.new_empty((n,), dtype=torch.int64), x.new_empty((n,), dtype=torch.float32)


@torch.library.custom_op("fieldpress::vq_sqdist_bwd", mutates_args=())
def _vq_sqdist_bwd(grad: Tensor, x: Tensor, codebook: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    return ref.vq_sqdist_backward_ref(grad, x, codebook, index)


@_vq_sqdist_bwd.register_fake
def _(grad, x, codebook, index):
    return torch.empty_like(x), torch.empty_like(codebook)


def _assign_setup(ctx, inputs, output):
    x, codebook = inputs
    ctx.save_for_backward(x, codebook, output[0])


def _assign_backward(ctx, _grad_index, grad_sqdist):
    x, codebook, index = ctx.saved_tensors
    if grad_sqdist is None:
        return None, None
    return _vq_sqdist_bwd(grad_sqdist, x, codebook, index)


_vq_assign.register_autograd(_assign_backward, setup_context=_assign_setup)


@torch.library.custom_op("fieldpress::vq_update", mutates_args=())
def _vq_update(
    x: Tensor, index: Tensor, k: int, weights: Tensor | None, codebook: Tensor | None
) -> tuple[Tensor, Tensor]:
    if x.shape[1] <= MAX_KERNEL_DIM and use_triton(x, index):
        return kernels("vq").vq_update(x, index, k, weights, codebook)
    with torch.no_grad():
        return ref.vq_update_ref(x, index, k, weights, codebook)


@_vq_update.register_fake
def _(x, index, k, weights, codebook):
    return x.new_empty((k, x.shape[1]), dtype=torch.float32), x.new_empty((k,), dtype=torch.float32)


@torch.library.custom_op("fieldpress::vq_update_bwd", mutates_args=())
def _vq_update_bwd(
    grad_c: Tensor,
    grad_counts: Tensor,
    x: Tensor,
    index: Tensor,
    weights: Tensor | None,
    centroids: Tensor,
    counts: Tensor,
    codebook: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor]:
    gx, gw, gcb = ref.vq_update_backward_ref(grad_c, x, index, weights, centroids, counts, codebook)
    if gw is not None:
        gw = gw + grad_counts.to(gw.dtype)[index]
    # custom ops cannot return None (nor one tensor twice): fresh empty tensors stand for "no gradient"
    gw = x.new_empty((0,)) if gw is None else gw
    gcb = x.new_empty((0,)) if gcb is None else gcb
    return gx, gw, gcb


@_vq_update_bwd.register_fake
def _(grad_c, grad_counts, x, index, weights, centroids, counts, codebook):
    gw = x.new_empty((0,)) if weights is None else torch.empty_like(weights)
    gcb = x.new_empty((0,)) if codebook is None else torch.empty_like(codebook)
    return torch.empty_like(x), gw, gcb


def _update_setup(ctx, inputs, output):
    x, index, k, weights, codebook = inputs
    ctx.has_w, ctx.has_cb = weights is not None, codebook is not None
    ctx.save_for_backward(x, index, weights, output[0], output[1], codebook)


def _update_backward(ctx, grad_c, grad_counts):
    x, index, weights, centroids, counts, codebook = ctx.saved_tensors
    grad_c = torch.zeros_like(centroids) if grad_c is None else grad_c
    grad_counts = torch.zeros_like(counts) if grad_counts is None else grad_counts
    gx, gw, gcb = _vq_update_bwd(grad_c, grad_counts, x, index, weights, centroids, counts, codebook)
    return gx, None, None, gw if ctx.has_w else None, gcb if ctx.has_cb else None


_vq_update.register_autograd(_update_backward, setup_context=_update_setup)


def vq_assign(x: Tensor, codebook: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest codeword of each row of x (N, D) among codebook (K, D): (index int64, sqdist float32).

    Never forms the N x K distance matrix. sqdist is differentiable in x and the codebook.
    """
    ref._check_vq(x, codebook)
    return _vq_assign(x.contiguous(), codebook.contiguous())


def vq_update(
    x: Tensor, index: Tensor, k: int, weights: Tensor | None = None, codebook: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """k-means update: weighted mean of the rows assigned to each of k clusters, and their total weight.

    Returns (centroids (k, D) float32, counts (k,) float32); an empty cluster keeps its row of
    `codebook` (zeros without one).
    """
    ref._check_update(x, index, k, weights, codebook)
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= k):
        raise ValueError(f"index values must lie in [0, {k})")
    w = None if weights is None else weights.contiguous()
    cb = None if codebook is None else codebook.contiguous()
    return _vq_update(x.contiguous(), index.contiguous().to(torch.int64), int(k), w, cb)
