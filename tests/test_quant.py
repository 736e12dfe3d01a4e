"""Quantizers, pruning, bit allocation and the state-dict codec; bit-exact agreement with the
fake-quantize op the QAT stage uses (fieldpress.cuda)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fieldpress.codec.container import open_container, read_info, write_container
from fieldpress.codec.quant import (
    allocate_bits,
    choose_axis,
    compress_state_dict,
    decompress_state_dict,
    dequantize,
    magnitude_prune,
    quant_params,
    quantize,
)
from fieldpress.cuda import fake_quantize, fake_quantize_ref
from fieldpress.errors import FormatError


def _w(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(-1).view(torch.uint8)
                                                                     if a.element_size() == 1 else a, b)


@pytest.mark.parametrize(("bits", "axis", "symmetric"),
                         list(itertools.product([2, 3, 8, 12, 16], [None, 0, 1, -1], [False, True])))
def test_quant_params_follow_the_one_formula(bits: int, axis: int | None, symmetric: bool) -> None:
    x = _w(6, 5, 4, seed=bits)
    scale, zp, qmin, qmax = quant_params(x, bits, axis, symmetric)
    dims = tuple(range(3)) if axis is None else tuple(d for d in range(3) if d != axis % 3)
    lo, hi = x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)
    if axis is None:
        lo, hi = lo.reshape(()), hi.reshape(())
    assert scale.shape == lo.shape == zp.shape and scale.dtype == torch.float32
    if symmetric:
        assert (qmin, qmax) == (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1)
        assert torch.equal(scale, torch.maximum(lo.abs(), hi.abs()) / qmax) and not zp.any()
    else:
        assert (qmin, qmax) == (0, 2**bits - 1)
        assert torch.equal(scale, (hi - lo) / qmax) and torch.equal(zp, torch.round(-lo / scale))
    q = quantize(x, bits, axis, symmetric)
    x_hat = dequantize(q)
    assert torch.equal(q.q.float(), torch.clamp(torch.round(x / scale) + zp, qmin, qmax))
    assert torch.equal(x_hat, (q.q.float() - zp) * scale)
    # half a step inside, at most a full one at a clamped edge
    assert float((x_hat - x).abs().div(scale).max()) <= 1.0 + 1e-6
    # bit for bit what the QAT op computes in memory, through the reference and the dispatch
    for op in (fake_quantize_ref, fake_quantize):
        assert torch.equal(op(x, scale, zp, qmin, qmax, None if axis is None else axis % 3), x_hat)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_float_dtypes_match_fake_quantize_too(dtype: torch.dtype) -> None:
    x = _w(8, 3, seed=5).to(dtype)
    q = quantize(x, 6, 0)
    x_hat = dequantize(q)
    assert x_hat.dtype == dtype
    scale, zp, qmin, qmax = quant_params(x, 6, 0)
    assert torch.equal(x_hat, fake_quantize_ref(x, scale, zp, qmin, qmax, 0))


@settings(max_examples=80, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5),
                  elements=st.floats(-1e6, 1e6, width=32)),
       st.integers(2, 16), st.booleans(), st.sampled_from([None, 0, "auto"]))
def test_dequantize_equals_fake_quantize_property(x: np.ndarray, bits: int, symmetric: bool, axis) -> None:
    t = torch.from_numpy(x)
    q = quantize(t, bits, axis, symmetric)
    scale, zp, qmin, qmax = quant_params(t, bits, q.axis, symmetric)
    assert torch.equal(dequantize(q), fake_quantize_ref(t, scale, zp, qmin, qmax, q.axis))
    assert int(q.q.min()) >= qmin and int(q.q.max()) <= qmax


def test_degenerate_tensors() -> None:
    const = torch.full((4, 3), 5.25)
    assert torch.equal(dequantize(quantize(const, 4, 0)), const)  # constant channels are exact
    zero = torch.zeros(3, 3)
    assert torch.equal(dequantize(quantize(zero, 2, None)), zero)
    empty = torch.zeros(0, 4)
    assert dequantize(quantize(empty, 8, None)).shape == (0, 4)
    scalar = torch.tensor(-3.0)
    assert torch.equal(dequantize(quantize(scalar, 8, "auto")), scalar)
    with pytest.raises(ValueError):
        quantize(const, 1)
    with pytest.raises(ValueError):
        quantize(const, 17)


def test_auto_axis_picks_the_lower_error_axis_as_hnerv_does() -> None:
    rows = _w(8, 16, seed=1) + 50.0 * torch.arange(8.0)[:, None]  # rows with very different offsets
    cols = _w(8, 16, seed=2) + 50.0 * torch.arange(16.0)[None, :]
    assert choose_axis(rows, 4) == 0 and quantize(rows, 4).axis == 0
    assert choose_axis(cols, 4) == 1 and quantize(cols, 4).axis == 1
    assert choose_axis(_w(10), 4) is None
    err = {ax: float((dequantize(quantize(cols, 4, ax)) - cols).pow(2).sum()) for ax in (0, 1)}
    assert err[1] < err[0]


# ----------------------------------------------------------------------------- pruning
def test_magnitude_prune_global_and_per_layer() -> None:
    state = {"a.weight": _w(10, 10, seed=3), "b.weight": _w(20, 5, seed=4) * 0.01, "bias": _w(10)}
    g = magnitude_prune(state, 0.5, "global")
    assert set(g) == {"a.weight", "b.weight"}  # 1-d tensors are not pruned by default
    assert sum(int((~m).sum()) for m in g.values()) == 100
    assert int(g["b.weight"].sum()) < int(g["a.weight"].sum())  # the small layer loses most
    kept = torch.cat([state[k][g[k]].abs() for k in g])
    dropped = torch.cat([state[k][~g[k]].abs() for k in g])
    assert kept.min() >= dropped.max()
    per = magnitude_prune(state, 0.3, "layer")
    assert int((~per["a.weight"]).sum()) == 30 and int((~per["b.weight"]).sum()) == 30
    assert magnitude_prune(state, 0.2, names=["bias"])["bias"].sum() == 8
    with pytest.raises(ValueError):
        magnitude_prune(state, 1.5)


def test_magnitude_prune_of_a_module_uses_linear_and_conv_weights() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Conv2d(2, 4, 3))
    masks = magnitude_prune(model, 0.25)
    assert set(masks) == {"0.weight", "2.weight"}
    assert sum(int((~m).sum()) for m in masks.values()) == round(0.25 * (128 + 72))


# ----------------------------------------------------------------------------- bit allocation
def test_allocate_bits_meets_the_target_and_is_locally_minimal() -> None:
    state = {"big": _w(64, 32, seed=5), "small": _w(16, 8, seed=6) * 0.01, "mid": _w(32, 16, seed=7) * 0.3}
    choices = (2, 4, 6, 8, 10, 12)
    total = sum(v.numel() for v in state.values())

    def mse(alloc: dict[str, int]) -> float:
        return sum(float((dequantize(quantize(state[k], b)) - state[k]).double().pow(2).sum())
                   for k, b in alloc.items()) / total

    target = 1.05 * mse({k: 6 for k in state})
    alloc = allocate_bits(state, target_error=target, choices=choices)
    assert mse(alloc) <= target
    bits = sum(state[k].numel() * b for k, b in alloc.items())
    assert bits < total * 6  # beats uniform 6 bits at (about) its error
    for k, b in alloc.items():  # no single further step down fits the target
        if b > choices[0]:
            lower = dict(alloc, **{k: choices[choices.index(b) - 1]})
            assert mse(lower) > target
    assert alloc["small"] <= alloc["big"]  # tiny weights need fewer bits for the same absolute error
    budget = allocate_bits(state, target_bits=5.0, choices=choices)
    assert sum(state[k].numel() * b for k, b in budget.items()) <= 5.0 * total
    with pytest.raises(ValueError):
        allocate_bits(state)


# ----------------------------------------------------------------------------- state dicts
def _model() -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(48, 64), torch.nn.GELU(), torch.nn.Conv2d(8, 16, 3),
                               torch.nn.BatchNorm1d(4))


def test_state_dict_round_trip_equals_fake_quantized_model(tmp_path: Path) -> None:
    model = _model()
    masks = magnitude_prune(model, 0.4)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for k, m in masks.items():
        state[k] = state[k] * m
    axes = {"0.weight": 0, "2.weight": 1}
    streams, meta = compress_state_dict(state, bits=6, bits_per_tensor={"2.bias": 10}, masks=masks,
                                        axis=None, axes=axes, keep_float=["3.weight"])
    path = tmp_path / "m.fpv"
    size = write_container(path, "video", {"state": meta}, streams)
    c = open_container(path)
    out = decompress_state_dict(c, c.header["state"])
    assert list(out) == list(state)
    for name, value in state.items():
        if not value.is_floating_point() or name == "3.weight":
            assert torch.equal(out[name], value) and out[name].dtype == value.dtype
            continue
        bits = 10 if name == "2.bias" else 6
        axis = axes.get(name)
        scale, zp, qmin, qmax = quant_params(value, bits, axis)
        assert torch.equal(out[name], fake_quantize_ref(value, scale, zp, qmin, qmax, axis)), name
        if name in masks:
            assert not out[name][~masks[name]].any()
    # pruned entries are not stored: masked q streams hold only the kept symbols
    assert streams["w/0.weight"].size == int(masks["0.weight"].sum())
    raw = sum(v.numel() * v.element_size() for v in state.values())
    assert size < raw / 4  # 60% kept at 6 of 32 bits, plus the masks, per-channel scales and the index
    model.load_state_dict(out)  # loadable as is


def test_state_dict_dtypes_symmetric_and_bfloat16(tmp_path: Path) -> None:
    state = {"w": _w(5, 4, seed=9).to(torch.bfloat16), "h": _w(7, seed=10).half(), "f": _w(3, 3),
             "steps": torch.tensor(17), "flag": torch.tensor([True, False])}
    streams, meta = compress_state_dict(state, bits=12, symmetric=True, keep_float=["f"])
    assert "w/:zero_point" not in streams  # symmetric: zero points are all 0 and not stored
    path = tmp_path / "s.fpi"
    write_container(path, "image", {"state": meta}, streams)
    out = decompress_state_dict(open_container(path), read_info(path).header["state"])
    for name in ("steps", "flag", "f"):
        assert torch.equal(out[name], state[name])
    for name in ("w", "h"):
        axis = meta["axes"][meta["names"].index(name)]
        s, z, qmin, qmax = quant_params(state[name], 12, axis, symmetric=True)
        assert out[name].dtype == state[name].dtype
        assert torch.equal(out[name], fake_quantize_ref(state[name], s, z, qmin, qmax, axis))
    no_quant, meta2 = compress_state_dict(state, bits=None)
    again = decompress_state_dict(no_quant, meta2)
    assert all(torch.equal(again[k], v) for k, v in state.items())


def test_decompress_rejects_inconsistent_meta() -> None:
    streams, meta = compress_state_dict({"a": _w(4, 4)}, bits=8)
    with pytest.raises(FormatError):
        decompress_state_dict(streams, {"format": "other"})
    broken = dict(meta, bits=[40])
    with pytest.raises(FormatError):
        decompress_state_dict(streams, broken)
    with pytest.raises(FormatError):
        decompress_state_dict({k: v for k, v in streams.items() if k != "w/:scale"}, meta)
    with pytest.raises(FormatError):
        decompress_state_dict(dict(streams, **{"w/a": streams["w/a"][:3]}), meta)
