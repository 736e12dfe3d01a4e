"""The container: exact round trips of every dtype, determinism, atomic writes, lazy decoding,
the kind registry, and damaged files (truncated, flipped, oversized claims, random bytes) that
must fail fast with a one-line FormatError and little memory."""

from __future__ import annotations

import functools
import struct
import time
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fieldpress
from fieldpress.codec import container as fc
from fieldpress.codec.container import (
    FORMAT_VERSION,
    MAX_STREAM_BYTES,
    encode_container,
    open_container,
    read_info,
    write_container,
)
from fieldpress.codec.entropy import varint_decode, varint_encode, zstd_decode, zstd_encode
from fieldpress.errors import FormatError, InputError

DTYPES = ["bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64",
          "float16", "float32", "float64"]
SHAPES = [(), (0,), (3, 0, 2), (1,), (5, 7), (2, 3, 4)]


def _random(dtype: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    dt = np.dtype(dtype)
    if dt.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return rng.integers(info.min, info.max, shape, dtype=dt, endpoint=True)
    # random bit patterns: NaNs, infinities, subnormals and -0.0 all included
    return rng.integers(0, 256, (*shape, dt.itemsize), dtype=np.uint8).view(dt).reshape(shape)


@pytest.mark.parametrize("codec", ["auto", "raw", "zstd", "ans"])
def test_round_trip_of_every_dtype_and_shape_is_exact(tmp_path: Path, codec: str) -> None:
    rng = np.random.default_rng(7)
    streams, codecs = {}, {}
    for dtype in DTYPES:
        for i, shape in enumerate(SHAPES):
            name = f"{dtype}/{i}"
            streams[name] = _random(dtype, shape, rng)
            if codec == "ans" and (np.dtype(dtype).kind == "f" or dtype == "uint64"):
                codecs[name] = "zstd"
            else:
                codecs[name] = codec
    streams["bf16"] = torch.randn(4, 3).to(torch.bfloat16)
    streams["bf16_0d"] = torch.tensor(1.5, dtype=torch.bfloat16)
    streams["bf16_empty"] = torch.zeros(0, 2, dtype=torch.bfloat16)
    header = {"fps": 30.0, "size": [64, 48], "name": "tëst", "nested": {"a": None, "b": [True, 1.5]}}
    path = tmp_path / "all.fpi"
    size = write_container(path, "image", header, streams, codecs)
    assert size == path.stat().st_size
    c = open_container(path)
    assert (c.kind, c.version, c.header, c.names) == ("image", FORMAT_VERSION, header, list(streams))
    for name, value in streams.items():
        if isinstance(value, torch.Tensor):
            t = c.tensor(name)
            assert t.dtype == torch.bfloat16 and t.shape == value.shape
            assert torch.equal(t.view(torch.int16), value.view(torch.int16))
            assert c.array(name).dtype == np.uint16
            continue
        out = c.array(name)
        assert out.dtype == value.dtype and out.shape == value.shape, name
        assert out.tobytes() == value.tobytes(), name
    assert set(c.arrays()) == set(streams)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(DTYPES), st.sampled_from(SHAPES), st.integers(0, 2**32 - 1),
                          st.sampled_from(["auto", "raw", "zstd", "ans"])), min_size=1, max_size=6))
def test_round_trip_property(tmp_path: Path, specs: list) -> None:
    streams, codecs = {}, {}
    for i, (dtype, shape, seed, codec) in enumerate(specs):
        streams[f"s{i}"] = _random(dtype, shape, np.random.default_rng(seed))
        ans_ok = np.dtype(dtype).kind in "biu" and dtype != "uint64"
        codecs[f"s{i}"] = "zstd" if codec == "ans" and not ans_ok else codec
    path = tmp_path / "prop.fpi"
    write_container(path, "image", {"n": len(specs)}, streams, codecs)
    c = open_container(path)
    for name, value in streams.items():
        out = c.array(name)
        assert out.dtype == value.dtype and out.shape == value.shape and out.tobytes() == value.tobytes()


def test_writing_is_deterministic_and_atomic(tmp_path: Path) -> None:
    streams = {"q": np.arange(1000, dtype=np.int16) % 13, "w": np.linspace(0, 1, 500, dtype=np.float32)}
    a = encode_container("video", {"b": 1, "a": 2}, streams)
    b = encode_container("video", {"a": 2, "b": 1}, dict(streams))
    assert a == b
    path = tmp_path / "x.fpv"
    write_container(path, "video", {"a": 2, "b": 1}, streams)
    assert path.read_bytes() == a
    with pytest.raises(ValueError):
        write_container(tmp_path / "bad.fpv", "video", {"x": float("nan")}, streams)
    with pytest.raises(ValueError):
        write_container(tmp_path / "bad.fpv", "audio", {}, streams)
    with pytest.raises(TypeError):
        write_container(tmp_path / "bad.fpv", "video", {"x": object()}, streams)
    converted = {"f": np.float32(0.5), "a": np.arange(3), "t": torch.tensor([1, 2]), "p": Path("x/y")}
    write_container(tmp_path / "np.fpv", "video", converted, streams)
    assert open_container(tmp_path / "np.fpv").header == {"f": 0.5, "a": [0, 1, 2], "t": [1, 2], "p": "x/y"}
    (tmp_path / "np.fpv").unlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.fpv"]  # no temp files, no partial output


def test_auto_codec_picks_the_smallest(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    streams = {"laplace": np.round(rng.laplace(0, 2, 20000)).astype(np.int8),
               "noise": rng.standard_normal(2000).astype(np.float32),
               "zeros": np.zeros(5000, np.float32)}
    path = tmp_path / "a.fpg"
    write_container(path, "scene", {}, streams)
    info = {s.name: s for s in read_info(path).streams}
    assert info["laplace"].codec == "ans"
    assert info["noise"].codec in ("raw", "zstd") and info["noise"].length <= 8000
    assert info["zeros"].codec == "zstd" and info["zeros"].length < 100


def test_info_and_open_through_the_public_api(tmp_path: Path) -> None:
    path = tmp_path / "p.fpi"
    write_container(path, "image", {"width": 4}, {"a": np.arange(6, dtype=np.uint8).reshape(2, 3)})
    info = fieldpress.info(str(path))
    d = info.to_dict()
    assert d["kind"] == "image" and d["version"] == 1 and d["file_bytes"] == path.stat().st_size
    assert d["header"] == {"width": 4}
    assert d["streams"][0] | {"codec": None, "length": None, "crc32": None} == {
        "name": "a", "codec": None, "dtype": "uint8", "shape": [2, 3], "length": None, "raw_bytes": 6,
        "crc32": None}
    c = fieldpress.open(str(path))
    assert c.kind == "image" and np.array_equal(c.array("a"), np.arange(6).reshape(2, 3))
    with pytest.raises(InputError):
        c.array("nope")
    with pytest.raises(InputError):
        fieldpress.open(str(tmp_path / "missing.fpi"))


def test_codec_registry_gives_decoder_and_summary(tmp_path: Path) -> None:
    from fieldpress.cli import RunSummary
    from fieldpress.codec.registry import (
        LazyCodec,
        Result,
        codec_for,
        encode_file,
        register_codec,
        unregister_codec,
        write_file,
    )

    path = tmp_path / "k.fpv"
    write_container(path, "video", {"codec": "toy", "frames": 3}, {"x": np.zeros(3, np.uint8)})
    assert read_info(path).summary == {}
    with pytest.raises(FormatError, match="codec 'toy', which is not installed"):
        open_container(path).decoder()
    toy = LazyCodec("video", "toy", 2, "tests.test_container:_TOY", lambda h: {"frames": h["frames"]},
                    legacy=lambda h: h.get("toy_v0") is True, aliases=("old-toy",))
    register_codec(toy)
    try:
        assert open_container(path).decoder(scale=10) == ("decoder", 30)
        assert read_info(path).summary == {"codec": "toy", "frames": 3}
        assert codec_for("video", {"codec": "old-toy"}) is toy  # a name older files carry
        assert codec_for("video", {"toy_v0": True}) is toy  # a header from before codecs were named
        with pytest.raises(FormatError, match="version 3"):
            codec_for("video", {"codec": "toy", "codec_version": 3})
        size = write_file(tmp_path / "w.fpv", toy, toy.encode(frames=5))
        c = open_container(tmp_path / "w.fpv")
        assert c.file_bytes == size and c.header["codec"] == "toy" and c.header["codec_version"] == 2
        assert c.decoder() == ("decoder", 5)
        result = Result(toy, encode_file(toy, toy.encode(frames=5)), {"psnr": 30.0}, "in.y4m", 1.5)
        assert result.write(tmp_path / "r.fpv") == result.bytes == size
        assert (tmp_path / "r.fpv").read_bytes() == (tmp_path / "w.fpv").read_bytes()
        summary = RunSummary.from_result("fit-toy", result, tmp_path / "r.fpv").to_dict()
        assert summary["bytes"] == size and summary["codec"] == "toy" and summary["psnr"] == 30.0
        bad = tmp_path / "bad.fpv"
        write_container(bad, "video", {"codec": "toy"}, {})  # a summary that cannot cope
        assert "summary_error" in read_info(bad).summary
    finally:
        unregister_codec("video", "toy")
    with pytest.raises(ValueError):
        register_codec(LazyCodec("audio", "x", 1, "m:a", lambda h: {}))


class _ToyCodec:
    def encode(self, frames: int) -> Any:
        from fieldpress.codec.registry import Encoded

        return Encoded({"frames": frames}, {"x": np.zeros(frames, np.uint8)})

    def decode(self, container: Any, scale: int = 1) -> tuple[str, int]:
        return ("decoder", container.header["frames"] * scale)


_TOY = _ToyCodec()


def test_every_installed_codec_is_light_and_named() -> None:
    from fieldpress.codec.registry import codecs

    names = {f"{k}/{n}" for k, n in codecs()}
    assert {"video/hnerv", "video/nerv", "video/nervpp", "image/field", "scene/lightgaussian"} <= names
    for codec in codecs().values():
        assert codec.version >= 1 and isinstance(codec.summarize({}), dict)


def test_lazy_decoding_detects_a_damaged_payload_only_when_read(tmp_path: Path) -> None:
    path = tmp_path / "d.fpi"
    write_container(path, "image", {}, {"a": np.arange(100, dtype=np.float32),
                                        "b": np.arange(100, dtype=np.float64)}, {"a": "raw", "b": "raw"})
    c = open_container(path)
    data = bytearray(path.read_bytes())
    data[c.streams["b"].offset + 5] ^= 0xFF
    path.write_bytes(bytes(data))
    c = open_container(path)  # the index is intact
    assert np.array_equal(c.array("a"), np.arange(100, dtype=np.float32))
    with pytest.raises(FormatError, match="CRC"):
        c.array("b")
    with pytest.raises(FormatError, match="CRC"):
        read_info(path)
    assert read_info(path, verify=False).kind == "image"


# ----------------------------------------------------------------------------- damaged files
@functools.lru_cache(maxsize=1)
def _sample_container() -> bytes:
    rng = np.random.default_rng(3)
    streams = {"weights": rng.standard_normal(4096).astype(np.float32),
               "symbols": np.round(rng.laplace(0, 3, 20000)).astype(np.int16),
               "mask": rng.random(3000) < 0.2,
               "scalar": np.float64(2.5)}
    return encode_container("video", {"fps": 25, "frames": 8, "model": "nerv"}, streams)


def _rewrite_index(data: bytes, patch) -> bytes:
    """Rebuild a container with `patch(index_bytes) -> index_bytes` and a valid CRC (a crafted file)."""
    magic, version, kind, reserved, zlen, rawlen, _ = fc._PREAMBLE.unpack_from(data)
    index = patch(zstd_decode(data[20:20 + zlen], rawlen))
    index_z = zstd_encode(index)
    pre = fc._PREAMBLE.pack(magic, version, kind, reserved, len(index_z), len(index), 0)[:-4]
    return pre + struct.pack("<I", zlib.crc32(index_z, zlib.crc32(pre))) + index_z + data[20 + zlen:]


def _claim_shape(data: bytes, name: bytes, shape: tuple[int, ...]) -> bytes:
    """A crafted file whose stream `name` claims `shape` (valid CRCs; the payload is unchanged)."""
    def patch(index: bytes) -> bytes:
        i = index.index(bytes([len(name)]) + name) + 1 + len(name)  # varint name length, then the name
        codec, dtype, ndim = struct.unpack_from("<BBB", index, i)
        _, end = varint_decode(index, ndim, i + 3)
        return (index[:i] + struct.pack("<BBB", codec, dtype, len(shape))
                + varint_encode(np.array(shape, np.uint64)) + index[end:])
    return _rewrite_index(data, patch)


def _check_rejected(path: Path, data: bytes) -> tuple[float, int]:
    """read_info must raise a one-line FormatError; returns (seconds, peak traced bytes)."""
    path.write_bytes(data)
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    start = time.perf_counter()
    with pytest.raises(FormatError) as err:
        read_info(path)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] - base
    assert "\n" not in str(err.value) and str(err.value)
    return seconds, peak


@pytest.fixture()
def traced():
    tracemalloc.start()
    yield
    tracemalloc.stop()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damaged_containers_fail_fast_with_little_memory(tmp_path: Path, traced: None,
                                                         data: st.DataObject) -> None:
    good = _sample_container()
    damage = data.draw(st.sampled_from(["truncate", "flip", "random", "claim"]))
    if damage == "truncate":
        bad = good[:data.draw(st.integers(0, len(good) - 1))]
    elif damage == "flip":
        pos = data.draw(st.integers(0, len(good) - 1))
        bad = good[:pos] + bytes([good[pos] ^ data.draw(st.integers(1, 255))]) + good[pos + 1:]
    elif damage == "random":
        bad = data.draw(st.binary(min_size=0, max_size=len(good)))
    else:
        name = data.draw(st.sampled_from([b"weights", b"symbols", b"mask"]))
        shape = data.draw(st.sampled_from([(2**40,), (2**20, 2**20), (2**33, 0, 2**40)]))
        bad = _claim_shape(good, name, shape)
    seconds, peak = _check_rejected(tmp_path / "bad.fpv", bad)
    assert seconds < 1.0
    assert peak <= 4 * len(good), (damage, peak, len(good))


def test_every_truncation_and_every_flip_of_a_small_file_is_rejected(tmp_path: Path) -> None:
    good = encode_container("image", {"w": 2}, {"a": np.arange(6, dtype=np.int8), "b": np.float32(1.0)})
    path = tmp_path / "small.fpi"
    for n in range(len(good)):
        path.write_bytes(good[:n])
        with pytest.raises(FormatError):
            read_info(path)
    for pos in range(len(good)):
        path.write_bytes(good[:pos] + bytes([good[pos] ^ 0x5A]) + good[pos + 1:])
        with pytest.raises(FormatError):
            read_info(path)
    path.write_bytes(good + b"\0")
    with pytest.raises(FormatError, match="after its last stream"):
        read_info(path)


def test_a_header_claiming_2_to_the_40_elements_is_rejected_before_allocating(tmp_path: Path) -> None:
    good = _sample_container()
    path = tmp_path / "huge.fpv"
    path.write_bytes(_claim_shape(good, b"symbols", (2**40,)))
    with pytest.raises(FormatError, match="over the limit"):
        read_info(path)
    with pytest.raises(FormatError, match="over the limit"):
        open_container(path)
    # within the per-stream limit but not matching the payload: caught when the stream is decoded
    path.write_bytes(_claim_shape(good, b"weights", (MAX_STREAM_BYTES // 8,)))
    with pytest.raises(FormatError):
        open_container(path).array("weights")
    path.write_bytes(_claim_shape(good, b"symbols", (7,)))  # info cannot tell without decoding
    assert read_info(path).kind == "video"
    with pytest.raises(FormatError):
        open_container(path).array("symbols")
    path.write_bytes(_claim_shape(good, b"symbols", (20001,)))
    with pytest.raises(FormatError):
        open_container(path).array("symbols")


def test_newer_format_versions_are_refused_with_a_clear_message(tmp_path: Path) -> None:
    good = bytearray(_sample_container())
    good[4:6] = struct.pack("<H", FORMAT_VERSION + 1)
    path = tmp_path / "future.fpv"
    path.write_bytes(bytes(good))
    with pytest.raises(FormatError, match="upgrade fieldpress"):
        read_info(path)


# ----------------------------------------------------------------------------- golden files
GOLDEN = Path(__file__).resolve().parent / "golden"


def _golden_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN / "make_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("v*.fpv")), ids=lambda p: p.name)
def test_golden_files_of_every_version_still_read(path: Path) -> None:
    info = read_info(path)
    assert info.version == int(path.stem[1:]) and info.kind == "video"
    c = open_container(path)
    arrays = c.arrays()
    assert len(arrays) == len(info.streams) > 0


def test_golden_files_v1_decode_to_the_expected_values() -> None:
    import json

    from fieldpress.codec.quant import decompress_state_dict

    golden = _golden_module()
    c = open_container(GOLDEN / "v1.fpv")
    assert c.version == 1 and c.header["golden"] == 1 and c.header["unicode"] == "é∑😀"
    checked = 0
    for name in c.names:
        if name.startswith("s/"):
            continue
        dtype, shape_name, codec = name.split("/")
        expected = golden.expected_stream(dtype, golden.SHAPES[shape_name],
                                          small=codec == "ans" and dtype != "bool")
        out = c.array(name)
        assert out.dtype == expected.dtype and out.shape == expected.shape, name
        assert out.tobytes() == expected.tobytes(), name
        if codec != "auto":
            assert c.streams[name].codec == codec
        checked += 1
    assert checked == 152  # 13 dtypes x 4 shapes x (raw, auto, and ans or zstd except bfloat16)
    expected_state = json.loads((GOLDEN / "v1.expected.json").read_text())["state"]
    state = decompress_state_dict(c, c.header["state"])
    assert list(state) == ["layer.weight", "layer.bias", "conv.weight", "half", "steps"]
    for name, exp in expected_state.items():
        t = state[name]
        assert str(t.dtype).removeprefix("torch.") == exp["dtype"] and list(t.shape) == exp["shape"]
        values = [float.fromhex(v) for v in exp["values"]]
        assert t.reshape(-1).double().tolist() == values, name


def test_a_container_opens_from_its_bytes_in_memory(tmp_path: Path) -> None:
    streams = {"a": np.arange(50, dtype=np.int16), "b": np.linspace(0, 1, 7, dtype=np.float32)}
    data = encode_container("image", {"k": 1}, streams)
    path = tmp_path / "m.fpi"
    path.write_bytes(data)
    from_bytes, from_file = open_container(data), open_container(path)
    assert from_bytes.header == from_file.header and from_bytes.file_bytes == len(data)
    for name in streams:
        assert np.array_equal(from_bytes.array(name), from_file.array(name))
    damaged = bytearray(data)
    damaged[-1] ^= 0xFF
    with pytest.raises(FormatError):
        open_container(bytes(damaged)).array("b")
