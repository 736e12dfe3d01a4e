"""Uniform quantization, magnitude pruning, mixed-precision bit allocation, and the state-dict codec.

One formula everywhere (docs/DEVELOPING.md), in float32, with torch.round (half to even):
    q = clamp(round(x / scale) + zero_point, qmin, qmax);   x_hat = (q - zero_point) * scale
so `dequantize(quantize(w))` equals `fieldpress.cuda.fake_quantize(w, *quant_params(w))` bit for bit,
and a decoded file reproduces the weights that were evaluated (and fine-tuned with QAT) at encode time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from fieldpress.errors import FormatError

MIN_BITS, MAX_BITS = 2, 16
# Scale floor relative to the tensor's magnitude: keeps |zero_point| <= 2**22 (exact in float32) for
# constant or nearly constant channels, and maps a constant channel back to itself exactly.
REL_SCALE_FLOOR = 2.0**-22
TINY = torch.finfo(torch.float32).tiny
STATE_FORMAT = "fieldpress.state/1"


@dataclass(frozen=True)
class QTensor:
    """A quantized tensor: integer symbols plus what dequantize needs to map them back."""

    q: Tensor  # int32 symbols in [qmin, qmax], the shape of the original tensor
    scale: Tensor  # float32, broadcastable against q (the channel axis keeps its size)
    zero_point: Tensor  # float32 integers, same shape as scale
    qmin: int
    qmax: int
    bits: int
    axis: int | None
    symmetric: bool
    dtype: torch.dtype  # of the original tensor; dequantize returns this dtype


def _check_bits(bits: int) -> int:
    if not (isinstance(bits, (int, np.integer)) and MIN_BITS <= int(bits) <= MAX_BITS):
        raise ValueError(f"bits must be an integer in {MIN_BITS}..{MAX_BITS}, got {bits!r}")
    return int(bits)


def _channel_view(x: Tensor, axis: int | None) -> tuple[Tensor, list[int]]:
    """x as (C, rest) and the shape that broadcasts a (C,) vector back against x."""
    if axis is None:
        return x.reshape(1, -1), [1] * x.dim()
    if x.dim() == 0:
        raise ValueError("per-channel quantization needs a tensor with at least one dimension")
    axis = axis % x.dim()
    shape = [1] * x.dim()
    shape[axis] = x.shape[axis]
    return x.movedim(axis, 0).reshape(x.shape[axis], -1), shape


def quant_params(t: Tensor, bits: int, axis: int | None,
                 symmetric: bool = False) -> tuple[Tensor, Tensor, int, int]:
    """Min-max (scale, zero_point, qmin, qmax) of `t`, per tensor (axis None) or per channel along `axis`.

    scale and zero_point are float32 and broadcast against `t` (0-d per tensor). The scale has a floor
    of max(2**-22 * max|x|, float32 tiny), so constant channels stay exact and zero_point stays exact.
    """
    bits = _check_bits(bits)
    x = t.detach().to(device="cpu", dtype=torch.float32)
    rows, shape = _channel_view(x, axis)
    if rows.shape[1] == 0:
        lo = hi = torch.zeros(rows.shape[0], dtype=torch.float32)
    else:
        lo, hi = rows.amin(dim=1), rows.amax(dim=1)
    absmax = torch.maximum(lo.abs(), hi.abs())
    floor = torch.clamp(absmax * REL_SCALE_FLOOR, min=TINY)
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        qmin = -qmax
        scale = torch.maximum(absmax / qmax, floor)
        zero_point = torch.zeros_like(scale)
    else:
        qmin, qmax = 0, 2**bits - 1
        scale = torch.maximum((hi - lo) / qmax, floor)
        zero_point = torch.round(-lo / scale)
    if axis is None:
        return scale.reshape(()), zero_point.reshape(()), qmin, qmax
    return scale.reshape(shape), zero_point.reshape(shape), qmin, qmax


def _quantize_with(x: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int) -> Tensor:
    return torch.clamp(torch.round(x / scale) + zero_point, qmin, qmax)


def choose_axis(t: Tensor, bits: int, symmetric: bool = False) -> int | None:
    """HNeRV's rule: per-channel along dim 0 or dim 1, whichever gives the lower squared error
    (dim 0 on ties); per tensor for 0-d and 1-d tensors."""
    if t.dim() < 2:
        return None
    x = t.detach().to(device="cpu", dtype=torch.float32)
    best, best_err = 0, math.inf
    for axis in (0, 1):
        scale, zp, qmin, qmax = quant_params(x, bits, axis, symmetric)
        err = float(((_quantize_with(x, scale, zp, qmin, qmax) - zp) * scale - x).double().pow(2).sum())
        if err < best_err:
            best, best_err = axis, err
    return best


def quantize(t: Tensor, bits: int, axis: int | None | str = "auto", symmetric: bool = False) -> QTensor:
    """Quantize `t` uniformly to `bits` bits (2..16); axis None = per tensor, "auto" = choose_axis."""
    bits = _check_bits(bits)
    if axis == "auto":
        axis = choose_axis(t, bits, symmetric)
    elif axis is not None and not isinstance(axis, (int, np.integer)):
        raise ValueError(f"axis must be an int, None or 'auto', got {axis!r}")
    if axis is not None:
        axis = int(axis) % max(t.dim(), 1)
    x = t.detach().to(device="cpu", dtype=torch.float32)
    scale, zp, qmin, qmax = quant_params(x, bits, axis, symmetric)
    q = _quantize_with(x, scale, zp, qmin, qmax).to(torch.int32)
    return QTensor(q, scale, zp, qmin, qmax, bits, axis, bool(symmetric), t.dtype)


def dequantize(q: QTensor) -> Tensor:
    """x_hat = (q - zero_point) * scale in float32, returned in the original dtype."""
    return ((q.q.to(torch.float32) - q.zero_point) * q.scale).to(q.dtype)


# ----------------------------------------------------------------------------- pruning
def _prunable_state(module_or_state: nn.Module | Mapping[str, Tensor], names: Iterable[str] | None
                    ) -> dict[str, Tensor]:
    if isinstance(module_or_state, nn.Module):
        from fieldpress.engine.prunable import prunable_weights, weight_tensor

        state = {name: weight_tensor(mod, attr) for name, mod, attr in prunable_weights(module_or_state)}
    else:
        state = dict(module_or_state)
        if names is None:
            state = {k: v for k, v in state.items() if v.is_floating_point() and v.dim() >= 2}
    if names is not None:
        names = list(names)
        missing = [n for n in names if n not in state]
        if missing:
            raise KeyError(f"no prunable tensor named {missing[0]!r}")
        state = {n: state[n] for n in names}
    return state


def _keep_mask(values: Tensor, n_prune: int) -> Tensor:
    """True except for the n_prune smallest |values| (ties: the earlier index is pruned first)."""
    keep = torch.ones(values.numel(), dtype=torch.bool)
    if n_prune > 0:
        order = torch.sort(values.reshape(-1), stable=True).indices
        keep[order[:n_prune]] = False
    return keep


def magnitude_prune(module_or_state: nn.Module | Mapping[str, Tensor], amount: float, scope: str = "global",
                    names: Iterable[str] | None = None) -> dict[str, Tensor]:
    """Masks (True = kept) that remove the `amount` fraction of smallest-magnitude weights.

    scope "global" ranks all chosen tensors together, "layer" prunes each tensor by `amount`. The
    tensors: the weights of Linear/Conv layers of a module, or the floating tensors with >= 2 dims of
    a state dict, or `names`. Exactly round(amount * count) entries are pruned.
    """
    if not 0.0 <= float(amount) <= 1.0:
        raise ValueError(f"amount must be in [0, 1], got {amount}")
    if scope not in ("global", "layer"):
        raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}")
    state = _prunable_state(module_or_state, names)
    mags = {k: v.detach().to(device="cpu", dtype=torch.float32).abs().reshape(-1) for k, v in state.items()}
    if scope == "layer":
        flat = {k: _keep_mask(m, round(amount * m.numel())) for k, m in mags.items()}
    else:
        allm = torch.cat(list(mags.values())) if mags else torch.zeros(0)
        keep = _keep_mask(allm, round(amount * allm.numel()))
        flat, start = {}, 0
        for k, m in mags.items():
            flat[k], start = keep[start:start + m.numel()], start + m.numel()
    return {k: flat[k].reshape(state[k].shape).to(state[k].device) for k in state}


# ----------------------------------------------------------------------------- bit allocation
def _sse(t: Tensor, bits: int, axis: int | None | str, symmetric: bool) -> float:
    x = t.detach().to(device="cpu", dtype=torch.float32)
    return float((dequantize(quantize(x, bits, axis, symmetric)) - x).double().pow(2).sum())


def allocate_bits(state: nn.Module | Mapping[str, Tensor], target_error: float | None = None,
                  target_bits: float | None = None, choices: Iterable[int] = range(2, 17),
                  axis: int | None | str = "auto", symmetric: bool = False,
                  names: Iterable[str] | None = None) -> dict[str, int]:
    """Per-tensor bit widths by greedy marginal analysis (a discrete Lagrangian descent).

    Every tensor starts at the largest choice; then, repeatedly, the tensor whose step down to its
    next smaller choice adds the least squared error per bit saved takes that step. With
    `target_error` (the mean squared error over all chosen parameters) steps that would exceed it are
    skipped and the descent stops when no step fits: this minimises bits for that error. With
    `target_bits` (mean bits per parameter) it steps until the budget is met.
    Tensors: floating tensors with >= 1 dim (or `names`; a module's Linear/Conv weights).
    """
    if (target_error is None) == (target_bits is None):
        raise ValueError("give exactly one of target_error and target_bits")
    levels = sorted({_check_bits(b) for b in choices})
    if isinstance(state, nn.Module):
        tensors = _prunable_state(state, names)
    else:
        tensors = {k: v for k, v in dict(state).items() if v.is_floating_point() and v.dim() >= 1}
        if names is not None:
            tensors = {n: dict(state)[n] for n in names}
    tensors = {k: v for k, v in tensors.items() if v.numel()}
    if not tensors:
        return {}
    sse = {k: {b: _sse(v, b, axis, symmetric) for b in levels} for k, v in tensors.items()}
    count = {k: v.numel() for k, v in tensors.items()}
    total = sum(count.values())
    chosen = {k: len(levels) - 1 for k in tensors}  # index into levels
    err = sum(sse[k][levels[-1]] for k in tensors)
    bits = sum(count[k] * levels[-1] for k in tensors)
    while True:
        if target_bits is not None and bits <= target_bits * total:
            break
        best = None
        for k, i in chosen.items():
            if i == 0:
                continue
            d_err = sse[k][levels[i - 1]] - sse[k][levels[i]]
            d_bits = count[k] * (levels[i] - levels[i - 1])
            if target_error is not None and err + d_err > target_error * total:
                continue
            ratio = d_err / d_bits
            if best is None or ratio < best[0]:
                best = (ratio, k, d_err, d_bits)
        if best is None:
            break
        _, k, d_err, d_bits = best
        chosen[k] -= 1
        err, bits = err + d_err, bits - d_bits
    return {k: levels[i] for k, i in chosen.items()}


# ----------------------------------------------------------------------------- state dicts
def _symbol_dtype(bits: int, symmetric: bool) -> torch.dtype:
    if symmetric:
        return torch.int8 if bits <= 8 else torch.int16
    return torch.uint8 if bits <= 8 else torch.int32  # stored as uint16 below (torch lacks uint16 ops)


def compress_state_dict(state: nn.Module | Mapping[str, Tensor], *, bits: int | None = 8,
                        bits_per_tensor: Mapping[str, int] | None = None,
                        masks: Mapping[str, Tensor] | None = None, keep_float: Iterable[str] = (),
                        prefix: str = "w/", axis: int | None | str = "auto", symmetric: bool = False,
                        axes: Mapping[str, int | None] | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Quantize a state dict into container streams plus a small JSON meta for the header.

    Floating tensors are quantized (bits_per_tensor overrides `bits`; bits None keeps floats; names
    in keep_float stay float); other tensors are stored as they are. A mask (True = kept) stores
    only the kept symbols plus the mask itself (a bool stream, which ANS codes at the mask's
    entropy); quantization parameters are computed on the masked tensor, so pruned entries decode
    to exactly 0 and everything equals fake_quantize(w * mask). Streams are named
    f"{prefix}{name}", f"{prefix}{name}:mask", and f"{prefix}:scale" / f"{prefix}:zero_point"
    (all scales and zero points concatenated in tensor order).
    """
    if isinstance(state, nn.Module):
        state = state.state_dict()
    bits_per_tensor, masks, axes = dict(bits_per_tensor or {}), dict(masks or {}), dict(axes or {})
    keep_float = set(keep_float)
    unknown = (set(bits_per_tensor) | set(masks) | set(axes) | keep_float) - set(state)
    if unknown:
        raise KeyError(f"no tensor named {sorted(unknown)[0]!r} in the state dict")
    streams: dict[str, np.ndarray] = {}
    tensors: dict[str, dict[str, Any]] = {}
    scales: list[Tensor] = []
    zps: list[Tensor] = []
    n_scale = n_zp = 0
    for name, value in state.items():
        t = value.detach().cpu()
        b = bits_per_tensor.get(name, bits)
        entry: dict[str, Any] = {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
        if not t.is_floating_point() or b is None or name in keep_float or t.numel() == 0:
            entry["mode"] = "raw"
            streams[prefix + name] = t.contiguous() if t.dtype == torch.bfloat16 else t.contiguous().numpy()
            tensors[name] = entry
            continue
        mask = masks.get(name)
        x = t.to(torch.float32)
        if mask is not None:
            mask = mask.detach().cpu().to(torch.bool)
            if mask.shape != t.shape:
                raise ValueError(f"mask of {name!r} has shape {tuple(mask.shape)}, tensor {tuple(t.shape)}")
            x = x * mask
        ax = axes.get(name, axis)
        qt = quantize(x, b, ax, symmetric)
        sym_np = qt.q.to(_symbol_dtype(b, symmetric)).numpy()
        if not symmetric and b > 8:
            sym_np = sym_np.astype(np.uint16)
        if mask is not None:
            sym_np = sym_np[mask.numpy()]
            streams[prefix + name + ":mask"] = mask.numpy()
        streams[prefix + name] = sym_np
        k = qt.scale.numel()
        entry.update(mode="q", bits=b, axis=qt.axis, symmetric=bool(symmetric), mask=mask is not None,
                     scale=n_scale)
        scales.append(qt.scale.reshape(-1))
        n_scale += k
        if not symmetric:
            entry["zero_point"] = n_zp
            zps.append(qt.zero_point.reshape(-1))
            n_zp += k
        tensors[name] = entry
    if scales:
        streams[prefix + ":scale"] = torch.cat(scales).numpy().astype(np.float32)
    if zps:
        streams[prefix + ":zero_point"] = torch.cat(zps).numpy().astype(np.int32)
    return streams, {"format": STATE_FORMAT, "prefix": prefix, "tensors": tensors}


def _get(streams: Any, name: str) -> np.ndarray:
    if hasattr(streams, "array") and not isinstance(streams, Mapping):
        if name not in streams:
            raise FormatError(f"missing stream {name!r}")
        return streams.array(name)
    try:
        return np.asarray(streams[name])
    except KeyError:
        raise FormatError(f"missing stream {name!r}") from None


def _torch_dtype(name: str) -> torch.dtype:
    dt = getattr(torch, str(name), None)
    if not isinstance(dt, torch.dtype):
        raise FormatError(f"unknown tensor dtype {name!r} in the state meta")
    return dt


def decompress_state_dict(streams: Mapping[str, np.ndarray] | Any,
                          meta: Mapping[str, Any]) -> dict[str, Tensor]:
    """Rebuild the state dict written by compress_state_dict (streams: a mapping or a Container)."""
    try:
        if meta.get("format") != STATE_FORMAT:
            raise FormatError(f"unsupported state meta format {meta.get('format')!r}")
        prefix = str(meta["prefix"])
        entries = dict(meta["tensors"])
    except (AttributeError, KeyError, TypeError):
        raise FormatError("malformed state meta") from None
    scale_all = zp_all = None
    out: dict[str, Tensor] = {}
    for name, e in entries.items():
        try:
            shape, dtype, mode = tuple(int(d) for d in e["shape"]), _torch_dtype(e["dtype"]), e["mode"]
            n = math.prod(shape)
            data = _get(streams, prefix + name)
            if mode == "raw":
                if data.shape != shape:
                    raise FormatError(f"stream {name!r} has shape {data.shape}, meta says {shape}")
                if dtype == torch.bfloat16:
                    bits16 = data.astype(np.uint16).view(np.int16).copy()
                    out[name] = torch.from_numpy(bits16).view(torch.bfloat16)
                else:
                    out[name] = torch.from_numpy(np.array(data, copy=True)).to(dtype)
                continue
            if mode != "q":
                raise FormatError(f"unknown tensor mode {mode!r}")
            bits, axis, sym = _check_bits(int(e["bits"])), e["axis"], bool(e["symmetric"])
            if axis is not None and not 0 <= int(axis) < max(len(shape), 1):
                raise FormatError(f"axis {axis} out of range for shape {shape}")
            channels = 1 if axis is None else shape[int(axis)]
            if scale_all is None:
                scale_all = _get(streams, prefix + ":scale").astype(np.float32).reshape(-1)
            s0 = int(e["scale"])
            if not 0 <= s0 <= scale_all.size - channels:
                raise FormatError(f"scale offset of {name!r} out of range")
            scale = torch.from_numpy(scale_all[s0:s0 + channels].copy())
            if sym:
                zp = torch.zeros(channels, dtype=torch.float32)
            else:
                if zp_all is None:
                    zp_all = _get(streams, prefix + ":zero_point").astype(np.int64).reshape(-1)
                z0 = int(e["zero_point"])
                if not 0 <= z0 <= zp_all.size - channels:
                    raise FormatError(f"zero point offset of {name!r} out of range")
                zp = torch.from_numpy(zp_all[z0:z0 + channels].astype(np.float32))
            qmax = 2 ** (bits - 1) - 1 if sym else 2**bits - 1
            qmin = -qmax if sym else 0
            symbols = data.astype(np.int64).reshape(-1)
            if symbols.size and (symbols.min() < qmin or symbols.max() > qmax):
                raise FormatError(f"symbols of {name!r} outside {qmin}..{qmax}")
            if e.get("mask"):
                mask = _get(streams, prefix + name + ":mask").astype(bool)
                if mask.shape != shape or int(mask.sum()) != symbols.size:
                    raise FormatError(f"mask of {name!r} does not match its symbols")
                full = np.full(n, np.nan, np.float64)
                full[mask.reshape(-1)] = symbols
                q = torch.from_numpy(full).to(torch.float32).reshape(shape)
            else:
                if symbols.size != n:
                    raise FormatError(f"stream {name!r} has {symbols.size} symbols, expected {n}")
                q = torch.from_numpy(symbols).to(torch.float32).reshape(shape)
            bshape = [1] * len(shape)
            if axis is not None:
                bshape[int(axis)] = channels
            x_hat = (q - zp.reshape(bshape)) * scale.reshape(bshape)
            if e.get("mask"):
                x_hat = torch.where(torch.from_numpy(mask), x_hat, torch.zeros((), dtype=torch.float32))
            out[name] = x_hat.to(dtype)
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"state tensor {name!r}: malformed meta or streams ({exc})") from None
    return out
