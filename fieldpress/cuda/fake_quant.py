"""Public fake-quantization ops: `torch.library` custom ops that run Triton on CUDA, the reference elsewhere.

`fake_quantize` and `fake_quantize_with_rate` are what the Fitter's QAT stage and the codec call;
the math and the gradients are documented in `fake_quant_ref`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import fake_quant_ref as ref
from ._backend import kernels, use_triton


@torch.library.custom_op("fieldpress::fake_quantize_fwd", mutates_args=())
def _fq_fwd(x: Tensor, scale: Tensor, zp: Tensor, qmin: int, qmax: int, inner: int) -> Tensor:
    if use_triton(x):
        return kernels("fake_quant").fq_forward(x, scale, zp, qmin, qmax, inner)
    return ref.fq_forward_ref(x, scale, zp, qmin, qmax, inner)[0]


@_fq_fwd.register_fake
def _(x, scale, zp, qmin, qmax, inner):
    return torch.empty_like(x)


@torch.library.custom_op("fieldpress::fake_quantize_bwd", mutates_args=())
def _fq_bwd(grad: Tensor, x: Tensor, scale: Tensor, zp: Tensor, qmin: int, qmax: int, inner: int) -> Tensor:
    if use_triton(grad, x):
        return kernels("fake_quant").fq_backward(grad.contiguous(), x, scale, zp, qmin, qmax, inner)
    return ref.fq_backward_ref(grad, x, scale, zp, qmin, qmax, inner)


@_fq_bwd.register_fake
def _(grad, x, scale, zp, qmin, qmax, inner):
    return torch.empty_like(grad)


def _fq_setup(ctx, inputs, output):
    x, scale, zp, qmin, qmax, inner = inputs
    ctx.save_for_backward(x, scale, zp)
    ctx.args = (qmin, qmax, inner)


def _fq_backward(ctx, grad):
    x, scale, zp = ctx.saved_tensors
    return _fq_bwd(grad, x, scale, zp, *ctx.args), None, None, None, None, None


_fq_fwd.register_autograd(_fq_backward, setup_context=_fq_setup)


@torch.library.custom_op("fieldpress::fake_quantize_rate_fwd", mutates_args=())
def _fqr_fwd(
    x: Tensor, scale: Tensor, zp: Tensor, qmin: int, qmax: int, inner: int
) -> tuple[Tensor, Tensor, Tensor]:
    if use_triton(x):
        return kernels("fake_quant").fq_rate_forward(x, scale, zp, qmin, qmax, inner)
    return ref.fq_rate_forward_ref(x, scale, zp, qmin, qmax, inner)


@_fqr_fwd.register_fake
def _(x, scale, zp, qmin, qmax, inner):
    pmf = x.new_empty((qmax - qmin + 1,), dtype=torch.float32)
    return torch.empty_like(x), x.new_empty((), dtype=torch.float32), pmf


@torch.library.custom_op("fieldpress::fake_quantize_rate_bwd", mutates_args=())
def _fqr_bwd(
    grad: Tensor,
    grad_bits: Tensor,
    x: Tensor,
    scale: Tensor,
    zp: Tensor,
    pmf: Tensor,
    qmin: int,
    qmax: int,
    inner: int,
) -> Tensor:
    if use_triton(grad, x):
        return kernels("fake_quant").fq_rate_backward(
            grad.contiguous(), grad_bits, x, scale, zp, pmf, qmin, qmax, inner
        )
    return ref.fq_rate_backward_ref(grad, grad_bits, x, scale, zp, pmf, qmin, qmax, inner)


@_fqr_bwd.register_fake
def _(grad, grad_bits, x, scale, zp, pmf, qmin, qmax, inner):
    return torch.empty_like(grad)


def _fqr_setup(ctx, inputs, output):
    x, scale, zp, qmin, qmax, inner = inputs
    ctx.save_for_backward(x, scale, zp, output[2])
    ctx.args = (qmin, qmax, inner)


def _fqr_backward(ctx, grad, grad_bits, _grad_pmf):
    x, scale, zp, pmf = ctx.saved_tensors
    if grad is None:
        grad = torch.zeros_like(x)
    if grad_bits is None:
        grad_bits = x.new_zeros((), dtype=torch.float32)
    gx = _fqr_bwd(grad, grad_bits, x, scale, zp, pmf, *ctx.args)
    return gx, None, None, None, None, None


_fqr_fwd.register_autograd(_fqr_backward, setup_context=_fqr_setup)


def _prepare(x: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int, axis: int | None):
    ref._check_range(qmin, qmax)
    s, z, inner = ref.channel_layout(x, scale, zero_point, axis)
    return x.contiguous(), s, z, int(qmin), int(qmax), inner


def fake_quantize(
    x: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int, axis: int | None
) -> Tensor:
    """x_hat = (clamp(round(x/scale) + zp, qmin, qmax) - zp) * scale, float32 math, clipped-STE gradient.

    `axis` None: one scale for the tensor; an int: one scale per index along that axis. The result
    has x's dtype and shape.
    """
    return _fq_fwd(*_prepare(x, scale, zero_point, qmin, qmax, axis))


def fake_quantize_with_rate(
    x: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int, axis: int | None
) -> tuple[Tensor, Tensor]:
    """(x_hat, bits): `fake_quantize` plus the empirical code length of the symbols (float32 scalar).

    `bits` is differentiable through the linear-pmf proxy described in `fake_quant_ref`.
    """
    x_hat, bits, _pmf = _fqr_fwd(*_prepare(x, scale, zero_point, qmin, qmax, axis))
    return x_hat, bits
