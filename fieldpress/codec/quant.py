"""Uniform quantization, magnitude pruning, mixed-precision bit allocation, and the state-dict codec.

One formula everywhere (docs/DEVELOPING.md), in float32, with torch.round (half to even):
    q = clamp(round(x / scale) + zero_point, qmin, qmax);   x_hat = (q - zero_point) * scale
so `dequantize(quantize(w))` equals `fieldpress.cuda.fake_quantize(w, *quant_params(w))` bit for bit,
and a decoded file reproduces the weights that were evaluated (and fine-tuned with QAT) at encode time.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from fieldpress.codec.qtensor import (
    QTensor,
    bit_range,
    check_bits,
    from_parts,
    stream,
    torch_dtype,
)
from fieldpress.errors import FormatError

# Scale floor relative to the tensor's magnitude: keeps |zero_point| <= 2**22 (exact in float32) for
# constant or nearly constant channels, and maps a constant channel back to itself exactly.
REL_SCALE_FLOOR = 2.0**-22
TINY = torch.finfo(torch.float32).tiny
STATE_FORMAT = "fieldpress.state/1"


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
    bits = check_bits(bits)
    x = t.detach().to(dtype=torch.float32)  # stays on its device: QAT calls this every forward
    rows, shape = _channel_view(x, axis)
    if rows.shape[1] == 0:
        lo = hi = torch.zeros(rows.shape[0], dtype=torch.float32, device=x.device)
    else:
        lo, hi = rows.amin(dim=1), rows.amax(dim=1)
    absmax = torch.maximum(lo.abs(), hi.abs())
    floor = torch.clamp(absmax * REL_SCALE_FLOOR, min=TINY)
    qmin, qmax = bit_range(bits, symmetric)
    if symmetric:
        scale = torch.maximum(absmax / qmax, floor)
        zero_point = torch.zeros_like(scale)
    else:
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
    bits = check_bits(bits)
    if axis == "auto":
        axis = choose_axis(t, bits, symmetric)
    elif axis is not None and not isinstance(axis, (int, np.integer)):
        raise ValueError(f"axis must be an int, None or 'auto', got {axis!r}")
    if axis is not None:
        axis = int(axis) % max(t.dim(), 1)
    x = t.detach().to(device="cpu", dtype=torch.float32)
    scale, zp, qmin, qmax = quant_params(x, bits, axis, symmetric)
    q = _quantize_with(x, scale, zp, qmin, qmax).to(torch.int32)
    return QTensor(q, scale, zp, bits, axis, symmetric=bool(symmetric), dtype=t.dtype)


def dequantize(q: QTensor) -> Tensor:
    """x_hat = (q - zero_point) * scale in float32, returned in the original dtype."""
    return q.dequantize()


# ----------------------------------------------------------------------------- pruning
def _prunable_state(module_or_state: nn.Module | Mapping[str, Tensor], names: Iterable[str] | None
                    ) -> dict[str, Tensor]:
    if isinstance(module_or_state, nn.Module):
        from fieldpress.codec.prunable import prunable_weights, weight_tensor

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


class _Allocation:
    """The bit-allocation problem: per tensor (rows) and bit width (columns) its bits and squared error,
    and the target (mean squared error, or mean bits per parameter) an allocation must meet."""

    def __init__(self, err: np.ndarray, cost: np.ndarray, total: float, target_error: float | None,
                 target_bits: float | None) -> None:
        self.err, self.cost, self.total = err, cost, total
        self.target_error, self.target_bits = target_error, target_bits
        self.by_error = target_error is not None
        self.rows = np.arange(err.shape[0])

    def totals(self, pick: np.ndarray) -> tuple[float, float]:
        return float(self.cost[self.rows, pick].sum()), float(self.err[self.rows, pick].sum())

    def fits(self, pick: np.ndarray) -> bool:
        b, e = self.totals(pick)
        return e <= self.target_error * self.total if self.by_error else b <= self.target_bits * self.total

    def lagrangian(self, lam: float) -> np.ndarray:
        return np.argmin(self.cost + lam * self.err, axis=1)

    def _best_step(self, pick: np.ndarray) -> tuple[int, int] | None:
        """The single step (down for an error target, up for a bit target) with the best error per bit."""
        best, best_ratio = None, math.inf
        for i in self.rows:
            j = pick[i] + (-1 if self.by_error else 1)
            if not 0 <= j < self.err.shape[1]:
                continue
            trial = pick.copy()
            trial[i] = j
            if not self.fits(trial):
                continue
            d_bits = abs(self.cost[i, j] - self.cost[i, pick[i]])
            ratio = (self.err[i, j] - self.err[i, pick[i]]) / d_bits  # > 0 stepping down, < 0 up
            if ratio < best_ratio:
                best, best_ratio = (i, j), ratio
        return best

    def refine(self, pick: np.ndarray) -> np.ndarray:
        """Greedy marginal analysis: take the best single step while the target holds."""
        pick = pick.copy()
        while (step := self._best_step(pick)) is not None:
            pick[step[0]] = step[1]
        return pick

    def bisect(self) -> np.ndarray:
        """The Lagrangian allocation whose lambda (bisected in log space) just meets the target."""
        lo, hi = -80.0, 80.0  # error falls and bits rise as lambda grows
        for _ in range(100):
            mid = 0.5 * (lo + hi)
            ok = self.fits(self.lagrangian(math.exp(mid)))
            if self.by_error:
                hi, lo = (mid, lo) if ok else (hi, mid)
            else:
                lo, hi = (mid, hi) if ok else (lo, mid)
        return self.lagrangian(math.exp(hi if self.by_error else lo))

    def solve(self) -> np.ndarray:
        """The better of the refined Lagrangian start and a plain greedy walk from the extreme."""
        widest = self.err.shape[1] - 1 if self.by_error else 0
        extreme = np.full(len(self.rows), widest, np.int64)
        if not self.fits(extreme):  # unreachable: the largest (smallest) choice everywhere
            return extreme
        start = self.bisect()
        if not self.fits(start):
            start = extreme
        candidates = [self.refine(start), self.refine(extreme)]
        if self.by_error:
            return min(candidates, key=lambda p: self.totals(p))  # fewest bits, then lowest error
        return min(candidates, key=lambda p: self.totals(p)[::-1])  # lowest error, then fewest bits


def _allocation_tensors(state: nn.Module | Mapping[str, Tensor],
                        names: Iterable[str] | None) -> dict[str, Tensor]:
    """The tensors bits are allocated to (non-empty; see allocate_bits)."""
    if isinstance(state, nn.Module):
        tensors = _prunable_state(state, names)
    else:
        full = dict(state)
        if names is not None:
            tensors = {n: full[n] for n in names}
        else:
            tensors = {k: v for k, v in full.items() if v.is_floating_point() and v.dim() >= 1}
    return {k: v for k, v in tensors.items() if v.numel()}


def allocate_bits(state: nn.Module | Mapping[str, Tensor], target_error: float | None = None,
                  target_bits: float | None = None, choices: Iterable[int] = range(2, 17),
                  axis: int | None | str = "auto", symmetric: bool = False,
                  names: Iterable[str] | None = None) -> dict[str, int]:
    """Per-tensor bit widths that minimise total bits for a target error (or error for a bit budget).

    Algorithm: Lagrangian bit allocation (Shoham & Gersho) refined by greedy marginal analysis.
    The squared error of every tensor at every choice is measured; each tensor then independently
    minimises bits + lambda * error, with lambda bisected until the target is just met; then single
    steps are taken while they stay within the target (down, the cheapest error per bit saved first,
    for `target_error`; up, the largest error drop per bit for `target_bits`). A plain greedy descent
    from the largest choice is also run and the better of the two allocations is returned.
    `target_error`: mean squared error over all chosen parameters; `target_bits`: mean bits per
    parameter. An unreachable target gives the largest (or smallest) choice everywhere.
    Tensors: floating tensors with >= 1 dim (or `names`; a module's Linear/Conv weights).
    """
    if (target_error is None) == (target_bits is None):
        raise ValueError("give exactly one of target_error and target_bits")
    levels = sorted({check_bits(b) for b in choices})
    tensors = _allocation_tensors(state, names)
    if not tensors:
        return {}
    keys = list(tensors)
    n = np.array([tensors[k].numel() for k in keys], np.float64)
    err = np.array([[_sse(tensors[k], b, axis, symmetric) for b in levels] for k in keys])  # (K, L)
    cost = n[:, None] * np.array(levels, np.float64)[None, :]  # bits, (K, L)
    best = _Allocation(err, cost, float(n.sum()), target_error, target_bits).solve()
    return {k: levels[int(best[i])] for i, k in enumerate(keys)}


# ----------------------------------------------------------------------------- state dicts
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
    to exactly 0 and everything equals fake_quantize(w * mask). Streams: f"{prefix}{name}" (symbols
    or the raw tensor), f"{prefix}{name}:mask", and f"{prefix}:scale" (float32) /
    f"{prefix}:zero_point" (int32): every quantized tensor's scales and zero points concatenated in
    tensor order. The meta is columnar to stay small: names, bits (0 = stored as is), axes, the
    symmetric flag and the dtypes other than float32.
    """
    if isinstance(state, nn.Module):
        state = state.state_dict()
    bits_per_tensor, masks, axes = dict(bits_per_tensor or {}), dict(masks or {}), dict(axes or {})
    keep_float = set(keep_float)
    unknown = (set(bits_per_tensor) | set(masks) | set(axes) | keep_float) - set(state)
    if unknown:
        raise KeyError(f"no tensor named {sorted(unknown)[0]!r} in the state dict")
    streams: dict[str, np.ndarray] = {}
    names: list[str] = []
    bit_list: list[int] = []
    axis_list: list[int | None] = []
    dtypes: dict[str, str] = {}
    scales: list[Tensor] = []
    zps: list[Tensor] = []
    for name, value in state.items():
        t = value.detach().cpu()
        b = bits_per_tensor.get(name, bits)
        names.append(name)
        if t.is_floating_point() and t.dtype != torch.float32:
            dtypes[name] = str(t.dtype).removeprefix("torch.")
        if not t.is_floating_point() or b is None or name in keep_float or t.numel() == 0:
            bit_list.append(0)
            axis_list.append(None)
            streams[prefix + name] = t.contiguous() if t.dtype == torch.bfloat16 else t.contiguous().numpy()
            continue
        mask = masks.get(name)
        x = t.to(torch.float32)
        if mask is not None:
            mask = mask.detach().cpu().to(torch.bool)
            if mask.shape != t.shape:
                raise ValueError(f"mask of {name!r} has shape {tuple(mask.shape)}, tensor {tuple(t.shape)}")
            x = x * mask
        qt = quantize(x, b, axes.get(name, axis), symmetric)
        if mask is not None:
            qt = dataclasses.replace(qt, mask=mask)
            streams[prefix + name + ":mask"] = mask.numpy()
        streams[prefix + name] = qt.symbols()
        bit_list.append(b)
        axis_list.append(qt.axis)
        scales.append(qt.scale.reshape(-1))
        if not symmetric:
            zps.append(qt.zero_point.reshape(-1))
    if scales:
        streams[prefix + ":scale"] = torch.cat(scales).numpy().astype(np.float32)
    if zps:
        streams[prefix + ":zero_point"] = torch.cat(zps).numpy().astype(np.int32)
    # lists, not a dict keyed by name: the container's JSON header sorts keys, and order matters
    meta = {"format": STATE_FORMAT, "prefix": prefix, "names": names, "bits": bit_list, "axes": axis_list,
            "symmetric": bool(symmetric)}
    if dtypes:
        meta["dtypes"] = dtypes
    return streams, meta


class _Columns:
    """The concatenated per-channel scales (or zero points) of a state dict, handed out in tensor order."""

    def __init__(self, streams: Any, name: str, dtype: type) -> None:
        self.streams, self.name, self.dtype = streams, name, dtype
        self.values: np.ndarray | None = None
        self.used = 0

    def take(self, channels: int) -> np.ndarray:
        if self.values is None:
            self.values = stream(self.streams, self.name).astype(self.dtype).reshape(-1)
        if self.used + channels > self.values.size:
            raise FormatError(f"the {self.name.rsplit(':', 1)[-1]} stream is too short")
        self.used += channels
        return self.values[self.used - channels:self.used]

    @property
    def exhausted(self) -> bool:
        return self.values is None or self.used == self.values.size


def _stored_as_is(data: np.ndarray, dtype: torch.dtype | None) -> Tensor:
    """A tensor the state codec kept unquantized (bfloat16 travels as its uint16 bits)."""
    if dtype == torch.bfloat16:
        return torch.from_numpy(data.astype(np.uint16).view(np.int16).copy()).view(torch.bfloat16)
    out = torch.from_numpy(np.array(data, copy=True))
    return out if dtype is None else out.to(dtype)


def decompress_state_dict(streams: Mapping[str, np.ndarray] | Any,
                          meta: Mapping[str, Any]) -> dict[str, Tensor]:
    """Rebuild the state dict written by compress_state_dict (streams: a mapping or a Container)."""
    try:
        if meta.get("format") != STATE_FORMAT:
            raise FormatError(f"unsupported state meta format {meta.get('format')!r}")
        prefix, sym = str(meta["prefix"]), bool(meta["symmetric"])
        names, bit_list, axis_list = list(meta["names"]), list(meta["bits"]), list(meta["axes"])
        dtypes = dict(meta.get("dtypes", {}))
    except (AttributeError, KeyError, TypeError):
        raise FormatError("malformed state meta") from None
    if not len(names) == len(bit_list) == len(axis_list):
        raise FormatError("state meta lists differ in length")
    scales = _Columns(streams, prefix + ":scale", np.float32)
    zero_points = None if sym else _Columns(streams, prefix + ":zero_point", np.int64)
    out: dict[str, Tensor] = {}
    for name, b, axis in zip(names, bit_list, axis_list):
        try:
            data = stream(streams, prefix + name)
            dtype = torch_dtype(dtypes[name]) if name in dtypes else None
            if b == 0:
                out[name] = _stored_as_is(data, dtype)
                continue
            mask = stream(streams, prefix + name + ":mask", required=False)
            shape = tuple(data.shape if mask is None else mask.shape)
            axis = None if axis is None else int(axis)
            if axis is not None and not 0 <= axis < max(len(shape), 1):
                raise FormatError(f"axis {axis} out of range for shape {shape}")
            channels = 1 if axis is None else shape[axis]
            zp = None if zero_points is None else zero_points.take(channels)
            qt = from_parts(data, scales.take(channels), zp, bits=int(b), axis=axis, shape=shape, mask=mask,
                            symmetric=sym, dtype=dtype or torch.float32)
            out[name] = qt.dequantize()
        except (KeyError, TypeError, ValueError, RuntimeError, FormatError) as exc:
            raise FormatError(f"state tensor {name!r}: {exc}") from None
    if not scales.exhausted or (zero_points is not None and not zero_points.exhausted):
        raise FormatError("the scale / zero point streams do not match the tensors' channels")
    return out
