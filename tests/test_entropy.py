"""Entropy coding: exact round trips (hypothesis), golden ANS vectors, the 1%-of-entropy bar."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fieldpress.codec import entropy
from fieldpress.codec.entropy import (
    ANS_MAX_ALPHABET,
    ans_decode,
    ans_encode,
    decode,
    encode,
    encode_best,
    varint_decode,
    varint_encode,
)
from fieldpress.errors import FormatError

INT_DTYPES = ["bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64"]
FLOAT_DTYPES = ["float16", "float32", "float64"]

# Fixed input -> fixed ANS payload, checked forever: a change here breaks every file already written.
# (Verified identical with constriction 0.4.0, 0.4.1, 0.4.2 and 0.5.0.)
GOLDEN_ANS = [
    (np.array([0, 1, 1, 2, 2, 2, 3, 3, 3, 3], np.int64), "0004000102030420ed1876c9010000"),
    (np.array([-5, 7, -5, 7, 7, 1000000, -5], np.int64), "0103090cb9843d030301c4244947"),
    (np.array([True, False, False, False, True, False, False, False] * 4), "0002001808f83ee1b135410000"),
    (np.full(9, 42, np.int64), "00015409"),
    (np.zeros(0, np.int64), ""),
]


@pytest.mark.parametrize(("symbols", "expected"), GOLDEN_ANS)
def test_ans_golden_vectors(symbols: np.ndarray, expected: str) -> None:
    assert ans_encode(symbols).hex() == expected
    assert np.array_equal(ans_decode(bytes.fromhex(expected), symbols.size), symbols.astype(np.int64))


def test_ans_within_one_percent_of_entropy_on_laplace() -> None:
    rng = np.random.default_rng(1234)
    symbols = np.round(rng.laplace(0.0, 4.0, 1_000_000)).astype(np.int32)
    _, counts = np.unique(symbols, return_counts=True)
    p = counts / counts.sum()
    entropy_bytes = float(-(counts * np.log2(p)).sum()) / 8
    payload = ans_encode(symbols)
    assert len(payload) <= 1.01 * entropy_bytes, (len(payload), entropy_bytes)
    assert len(payload) >= entropy_bytes  # sanity: nothing beats the empirical entropy
    assert np.array_equal(ans_decode(payload, symbols.size), symbols)
    assert encode_best(symbols)[0] == "ans"


def test_ans_edge_cases() -> None:
    assert ans_encode(np.zeros(0, np.int8)) == b""
    one = ans_encode(np.full(1000, -7, np.int16))
    assert len(one) == 5  # mode, K, min, count: a single symbol costs no bits
    assert np.array_equal(ans_decode(one, 1000), np.full(1000, -7))
    extremes = np.array([np.iinfo(np.int64).min, 0, np.iinfo(np.int64).max] * 5, np.int64)
    assert np.array_equal(ans_decode(ans_encode(extremes), extremes.size), extremes)
    # a sparse alphabet over a huge range uses the explicit alphabet table
    sparse = np.array([10**12, -(10**12), 3] * 100, np.int64)
    assert np.array_equal(ans_decode(ans_encode(sparse), sparse.size), sparse)


def test_ans_rejects_what_it_cannot_code_and_encode_best_falls_back() -> None:
    big = np.arange(ANS_MAX_ALPHABET + 1, dtype=np.int64) * 3
    with pytest.raises(ValueError):
        ans_encode(big)
    with pytest.raises(ValueError):
        ans_encode(np.array([1.5]))
    with pytest.raises(ValueError):
        ans_encode(np.array([2**64 - 1], np.uint64))
    codec, payload = encode_best(big)
    assert codec in ("zstd", "raw")
    assert np.array_equal(decode(codec, payload, big.dtype, big.shape), big)


def test_varints_round_trip_and_reject_overflow() -> None:
    values = np.array([0, 1, 127, 128, 300, 2**63, 2**64 - 1], np.uint64)
    data = varint_encode(values)
    assert data.hex() == "00017f8001ac0280808080808080808001ffffffffffffffffff01"
    out, end = varint_decode(data + b"tail", values.size)
    assert np.array_equal(out, values) and end == len(data)
    with pytest.raises(FormatError):
        varint_decode(b"\xff" * 10 + b"\x02", 1)
    with pytest.raises(FormatError):
        varint_decode(b"\x80\x80", 1)


@st.composite
def _int_arrays(draw: st.DrawFn) -> np.ndarray:
    dtype = np.dtype(draw(st.sampled_from(INT_DTYPES)))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6))
    if dtype.kind == "b":
        return draw(hnp.arrays(dtype, shape))
    info = np.iinfo(dtype)
    # mostly small alphabets (what ANS is for), sometimes the full range
    lo, hi = draw(st.sampled_from([(0, 3), (-20, 20), (int(info.min), int(info.max))]))
    lo, hi = max(lo, int(info.min)), min(hi, int(info.max))
    return draw(hnp.arrays(dtype, shape, elements=st.integers(lo, hi)))


@settings(max_examples=150, deadline=None)
@given(_int_arrays())
def test_every_codec_round_trips_integer_arrays_exactly(array: np.ndarray) -> None:
    for codec in ("raw", "zstd", "ans"):
        try:
            payload = encode(codec, array)
        except ValueError:
            assert codec == "ans" and array.dtype == np.uint64
            continue
        out = decode(codec, payload, array.dtype, array.shape)
        assert out.dtype == array.dtype and out.shape == array.shape
        assert np.array_equal(out, array)
    codec, payload = encode_best(array)
    assert len(payload) <= array.nbytes
    assert np.array_equal(decode(codec, payload, array.dtype, array.shape), array)


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(st.sampled_from(FLOAT_DTYPES).map(np.dtype),
                  hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6)))
def test_float_arrays_round_trip_bit_exactly(array: np.ndarray) -> None:
    codec, payload = encode_best(array)
    assert codec in ("raw", "zstd")
    out = decode(codec, payload, array.dtype, array.shape)
    assert out.tobytes() == array.tobytes()  # NaN payloads and -0.0 included


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.integers(0, 64))
def test_ans_decode_of_garbage_raises_format_error_or_decodes(data: bytes, count: int) -> None:
    try:
        out = ans_decode(data, count)
    except FormatError:
        return
    assert out.shape == (count,)


def test_zstd_decode_checks_the_declared_size() -> None:
    frame = entropy.zstd_encode(b"x" * 1000)
    assert entropy.zstd_decode(frame, 1000) == b"x" * 1000
    with pytest.raises(FormatError):
        entropy.zstd_decode(frame, 999)
    with pytest.raises(FormatError):
        entropy.zstd_decode(b"not zstd", 10)
    with pytest.raises(FormatError):
        decode("raw", b"abc", np.int32, (1,))


def test_ans_decode_memory_is_the_output_plus_one_chunk() -> None:
    """A tiny payload declaring millions of symbols decodes straight into its output dtype in chunks
    (the whole-stream int32 + int64 intermediates of a one-shot decode would need ~20x the output)."""
    import tracemalloc

    n = 2_000_000
    symbols = np.zeros(n, np.uint8)
    symbols[n // 2] = 1
    payload = ans_encode(symbols)
    assert len(payload) < 100
    tracemalloc.start()
    try:
        out = decode("ans", payload, np.uint8, (n,))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.dtype == np.uint8 and np.array_equal(out, symbols)
    assert peak < n + 16 * entropy.ANS_DECODE_CHUNK, peak
    constant = ans_encode(np.full(n, 7, np.int16))
    assert np.array_equal(ans_decode(constant, n, np.int16), np.full(n, 7, np.int16))
    with pytest.raises(FormatError, match="out of the range"):
        ans_decode(ans_encode(np.array([300, 1])), 2, np.uint8)
    with pytest.raises(FormatError, match="out of the range"):
        decode("ans", ans_encode(np.array([-1, 0, 5])), np.uint64, (3,))
