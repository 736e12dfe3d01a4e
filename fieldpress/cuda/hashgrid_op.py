"""Public hash-grid encoding op: the Triton kernel on CUDA, `hashgrid_ref` elsewhere.

`hashgrid(x, params, spec)` is what `fieldpress.fields`' hash-grid encoding calls. It is a
`torch.library` custom op (the level table travels as plain int/float lists, so `torch.compile`
keeps it as one node) with autograd for the table and for x.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._backend import kernels, use_triton
from .hashgrid_ref import MAX_BASES, HashGridSpec, hashgrid_ref

OUT_DTYPES = (torch.float32, torch.float16)


def _spec(n_dims: int, resolutions, offsets, sizes, hashed, scales, n_features: int, interpolation: str):
    return HashGridSpec(
        n_dims=n_dims,
        n_levels=len(resolutions),
        n_features_per_level=n_features,
        resolutions=tuple(resolutions),
        offsets=tuple(offsets),
        sizes=tuple(sizes),
        hashed=tuple(bool(h) for h in hashed),
        interpolation=interpolation,
        scales=tuple(scales),
    )


def _modes(n_dims: int, resolutions, hashed) -> list[int]:
    """Per level: 1 hashed, 2 dense but overflowing uint32 (tcnn indexes 0), 0 dense."""
    return [1 if h else (2 if r > MAX_BASES[n_dims] else 0) for r, h in zip(resolutions, hashed)]


def _kernel_fits(x: Tensor, n_features: int) -> bool:
    """The Triton kernel covers 1-3 input dimensions and power-of-two feature counts."""
    return 1 <= x.shape[1] <= 3 and n_features & (n_features - 1) == 0


def _table(x: Tensor, resolutions, offsets, sizes, hashed, scales):
    mod = kernels("hashgrid")
    modes = _modes(x.shape[1], resolutions, hashed)
    return mod, *mod.level_table(resolutions, offsets, sizes, modes, scales, x.device)


@torch.library.custom_op("fieldpress::hashgrid_fwd", mutates_args=())
def _hg_fwd(
    x: Tensor,
    params: Tensor,
    resolutions: list[int],
    offsets: list[int],
    sizes: list[int],
    hashed: list[bool],
    scales: list[float],
    n_features: int,
    interpolation: str,
    half: bool,
) -> Tensor:
    out_dtype = torch.float16 if half else torch.float32
    if _kernel_fits(x, n_features) and use_triton(x, params):
        mod, table, sc = _table(x, resolutions, offsets, sizes, hashed, scales)
        return mod.hashgrid_forward(x, params, table, sc, n_features, mod.INTERP[interpolation], out_dtype)
    spec = _spec(x.shape[1], resolutions, offsets, sizes, hashed, scales, n_features, interpolation)
    with torch.no_grad():
        return hashgrid_ref(x, params, spec).to(out_dtype)


@_hg_fwd.register_fake
def _(x, params, resolutions, offsets, sizes, hashed, scales, n_features, interpolation, half):
    dtype = torch.float16 if half else torch.float32
    return x.new_empty((x.shape[0], len(resolutions) * n_features), dtype=dtype)


@torch.library.custom_op("fieldpress::hashgrid_bwd", mutates_args=())
def _hg_bwd(
    grad: Tensor,
    x: Tensor,
    params: Tensor,
    resolutions: list[int],
    offsets: list[int],
    sizes: list[int],
    hashed: list[bool],
    scales: list[float],
    n_features: int,
    interpolation: str,
    need_x: bool,
) -> tuple[Tensor, Tensor]:
    if _kernel_fits(x, n_features) and use_triton(grad, x, params):
        mod, table, sc = _table(x, resolutions, offsets, sizes, hashed, scales)
        interp = mod.INTERP[interpolation]
        return mod.hashgrid_backward(grad, x, params, table, sc, n_features, interp, need_x)
    spec = _spec(x.shape[1], resolutions, offsets, sizes, hashed, scales, n_features, interpolation)
    # custom ops run below the autograd key, so the reference's gradient is taken with torch.func
    xr, pr = x.detach().to(torch.float32), params.detach().to(torch.float32)
    if need_x:
        _, vjp = torch.func.vjp(lambda a, b: hashgrid_ref(a, b, spec), xr, pr)
        gx, gp = vjp(grad.to(torch.float32))
    else:
        _, vjp = torch.func.vjp(lambda b: hashgrid_ref(xr, b, spec), pr)
        (gp,) = vjp(grad.to(torch.float32))
        gx = torch.zeros_like(xr)
    return gx, gp


@_hg_bwd.register_fake
def _(grad, x, params, resolutions, offsets, sizes, hashed, scales, n_features, interpolation, need_x):
    return x.new_empty(x.shape, dtype=torch.float32), params.new_empty(params.shape, dtype=torch.float32)


def _hg_setup(ctx, inputs, output):
    x, params, *meta, half = inputs
    ctx.save_for_backward(x, params)
    ctx.meta = tuple(meta)


def _hg_backward(ctx, grad):
    x, params = ctx.saved_tensors
    need_x = ctx.needs_input_grad[0]
    gx, gparams = _hg_bwd(grad.contiguous(), x, params, *ctx.meta, need_x)
    return (
        gx.to(x.dtype) if need_x else None,
        gparams.to(params.dtype),
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
    )


_hg_fwd.register_autograd(_hg_backward, setup_context=_hg_setup)


def hashgrid(x: Tensor, params: Tensor, spec: HashGridSpec, out_dtype: torch.dtype = torch.float32) -> Tensor:
    """Encode points x (N, d) in [0, 1] with the flat float32 table `params`: (N, n_levels * F).

    Same rules and layout as tiny-cuda-nn (see `hashgrid_ref`); `out_dtype` float16 gives tcnn's
    half-precision features (accumulated in float32). Differentiable in params and x.
    """
    if x.dim() != 2 or x.shape[1] != spec.n_dims:
        raise ValueError(f"x must be (N, {spec.n_dims}), got {tuple(x.shape)}")
    if params.dim() != 1 or params.numel() != spec.n_params:
        raise ValueError(f"params must be a flat vector of {spec.n_params}, got {tuple(params.shape)}")
    if out_dtype not in OUT_DTYPES:
        raise ValueError(f"out_dtype must be float32 or float16, got {out_dtype}")
    if not torch.compiler.is_compiling() and not (
        _kernel_fits(x, spec.n_features_per_level) and use_triton(x, params)
    ):
        # the reference under plain autograd: its backward reuses the forward's gathers, where the
        # custom op's backward would have to recompute them (twice the work on the CPU)
        return hashgrid_ref(x, params, spec).to(out_dtype)
    return _hg_fwd(
        x.contiguous(),
        params.contiguous(),
        list(spec.resolutions),
        list(spec.offsets),
        list(spec.sizes),
        [bool(h) for h in spec.hashed],
        [float(s) for s in spec.scales],
        spec.n_features_per_level,
        spec.interpolation,
        out_dtype == torch.float16,
    )
