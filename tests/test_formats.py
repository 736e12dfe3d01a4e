"""Scene formats: every shared file reads, INRIA PLY round-trips exactly, the quantized formats stay
within their quantization steps property by property, and bad input fails with one-line errors."""

from __future__ import annotations

import gzip
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fieldpress.errors import FormatError, InputError
from fieldpress.scenes import GaussianScene, load_scene, save_scene
from fieldpress.scenes.formats import detect_format, formats
from fieldpress.scenes.formats import spz as spz_format
from fieldpress.scenes.scene import SH_C0
from fieldpress.scenes.synthetic import synthetic_scene
from tests.conftest import shared_file

INRIA_FILES = ["fruit_drops.ply", "inria_iter7000.ply", "donut_sh0.ply", "trailing_bytes.ply"]
ALL_FILES = INRIA_FILES + ["guitar.compressed.ply", "sh3_fixture.compressed.ply"]


def _same(a: GaussianScene, b: GaussianScene) -> None:
    for name, value in a.tensors().items():
        assert torch.equal(value, getattr(b, name)), name
    assert list(a.extras) == list(b.extras)
    for name, value in a.extras.items():
        assert value.dtype == b.extras[name].dtype and np.array_equal(value, b.extras[name]), name


def _load_quiet(path: Path) -> GaussianScene:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_scene(path)


@pytest.mark.parametrize("name", ALL_FILES)
def test_every_shared_file_reads(name: str) -> None:
    scene = _load_quiet(shared_file(f"gaussians/{name}"))
    expected = {"fruit_drops.ply": 4721, "inria_iter7000.ply": 9080, "donut_sh0.ply": 45624,
                "trailing_bytes.ply": 100, "guitar.compressed.ply": 90854, "sh3_fixture.compressed.ply": 64}
    assert scene.n == expected[name]
    assert scene.sh_degree == {"donut_sh0.ply": 0, "guitar.compressed.ply": 0}.get(name, 3)
    scene.validate()


@pytest.mark.parametrize("name", INRIA_FILES)
def test_inria_round_trip_is_identical(name: str, tmp_path: Path) -> None:
    src = shared_file(f"gaussians/{name}")
    scene = _load_quiet(src)
    out = tmp_path / "out.ply"
    save_scene(scene, out)
    again = load_scene(out)
    _same(scene, again)
    data = src.read_bytes()
    assert out.read_bytes() == data[: out.stat().st_size]  # same header and payload, trailing junk dropped


def test_fruit_drops_keeps_transform(tmp_path: Path) -> None:
    scene = load_scene(shared_file("gaussians/fruit_drops.ply"))
    assert scene.extras["transform"].dtype == np.float32
    save_scene(scene.subset(np.arange(10)), tmp_path / "f.ply")
    again = load_scene(tmp_path / "f.ply")
    assert "transform" in again.extras
    assert np.array_equal(again.extras["transform"], scene.extras["transform"][:10])


def test_trailing_bytes_warns() -> None:
    with pytest.warns(UserWarning, match="14029 bytes after the declared PLY data"):
        load_scene(shared_file("gaussians/trailing_bytes.ply"))


@pytest.mark.parametrize("fmt", ["ascii", "binary_big_endian"])
def test_ascii_and_big_endian_round_trip(fmt: str, tmp_path: Path) -> None:
    scene = synthetic_scene(50, sh_degree=2, extras=True)
    from fieldpress.scenes.formats.inria_ply import write

    write(scene, tmp_path / "a.ply", format=fmt)
    first = load_scene(tmp_path / "a.ply")
    assert first.meta["ply"]["format"] == fmt
    for name, value in scene.tensors().items():
        assert torch.equal(value, getattr(first, name)), name
    assert first.extras["segment"].dtype == np.uint8
    save_scene(first, tmp_path / "b.ply")
    _same(first, load_scene(tmp_path / "b.ply"))


def test_format_detection_by_content(tmp_path: Path) -> None:
    scene = synthetic_scene(300, sh_degree=1)
    for suffix, name in ((".ply", "ply"), (".compressed.ply", "compressed-ply"), (".spz", "spz"),
                         (".splat", "splat")):
        out = tmp_path / f"s{suffix}"
        save_scene(scene, out)
        assert detect_format(out).name == name
    renamed = tmp_path / "misnamed.ply"
    renamed.write_bytes((tmp_path / "s.spz").read_bytes())
    assert detect_format(renamed).name == "spz"


def _chunk_step(values: np.ndarray, bits: int, chunk: int = 256) -> np.ndarray:
    n = len(values)
    starts = np.arange(0, n, chunk)
    lo = np.minimum.reduceat(values, starts, axis=0)
    hi = np.maximum.reduceat(values, starts, axis=0)
    return np.repeat((hi - lo) / ((1 << bits) - 1), np.diff(np.append(starts, n)), axis=0)


def _aligned_quats(a: torch.Tensor, b: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    qa = torch.nn.functional.normalize(a, dim=1).double().numpy()
    qb = torch.nn.functional.normalize(b, dim=1).double().numpy()
    sign = np.sign((qa * qb).sum(1, keepdims=True))
    return qa, qb * np.where(sign == 0, 1, sign)


def test_compressed_ply_errors_within_quantization(tmp_path: Path) -> None:
    scene = load_scene(shared_file("gaussians/fruit_drops.ply"))
    save_scene(scene, tmp_path / "c.compressed.ply", sort=False)
    out = load_scene(tmp_path / "c.compressed.ply")
    means = scene.means.double().numpy()
    bits = np.array([11, 10, 11])
    step = np.stack([_chunk_step(means[:, i], b) for i, b in enumerate(bits)], 1)
    assert (np.abs(out.means.double().numpy() - means) <= 0.5 * step + 1e-5).all()
    scales = scene.scales.double().numpy()
    step = np.stack([_chunk_step(scales[:, i], b) for i, b in enumerate(bits)], 1)
    assert (np.abs(out.scales.double().numpy() - scales) <= 0.5 * step + 1e-4).all()
    color = 0.5 + SH_C0 * scene.sh_dc.double().numpy()
    step = np.stack([_chunk_step(color[:, i], 8) for i in range(3)], 1)
    assert (np.abs(0.5 + SH_C0 * out.sh_dc.double().numpy() - color) <= 0.5 * step + 1e-5).all()
    alpha = torch.sigmoid(scene.opacities.double())
    assert float((torch.sigmoid(out.opacities.double()) - alpha).abs().max()) <= 0.5 / 255 + 1e-6
    qa, qb = _aligned_quats(scene.quats, out.quats)
    assert np.abs(qa - qb).max() <= 2.0 / 1023
    rest = scene.sh_rest.double().numpy()
    inside = np.abs(rest) < 4 - 1 / 32
    assert (np.abs(out.sh_rest.double().numpy() - rest)[inside] <= 1 / 32 + 1e-6).all()


def test_compressed_ply_sorts_morton_and_keeps_every_gaussian(tmp_path: Path) -> None:
    scene = synthetic_scene(700, sh_degree=0)
    save_scene(scene, tmp_path / "m.compressed.ply")
    out = load_scene(tmp_path / "m.compressed.ply")
    assert out.n == 700
    a = np.sort(scene.means.double().numpy()[:, 0])
    b = np.sort(out.means.double().numpy()[:, 0])
    assert np.abs(a - b).max() < 0.01


@pytest.mark.parametrize("version", [2, 3, 4])
def test_spz_errors_within_quantization(version: int, tmp_path: Path) -> None:
    scene = load_scene(shared_file("gaussians/fruit_drops.ply")).replace(meta={"antialiased": True})
    save_scene(scene, tmp_path / "s.spz", version=version)
    out = load_scene(tmp_path / "s.spz")
    assert out.meta["spz"]["version"] == version and out.antialiased
    frac = out.meta["spz"]["fractional_bits"]
    assert float((out.means.double() - scene.means.double()).abs().max()) <= 0.5 / (1 << frac) + 1e-6
    scales = scene.scales.double().numpy()
    inside = (scales > -10) & (scales < 255 / 16 - 10)
    assert (np.abs(out.scales.double().numpy() - scales)[inside] <= 1 / 32 + 1e-6).all()
    dc = scene.sh_dc.double().numpy()
    inside = np.abs(dc * 0.15) < 0.5
    assert (np.abs(out.sh_dc.double().numpy() - dc)[inside] <= 0.5 / (255 * 0.15) + 1e-5).all()
    alpha = torch.sigmoid(scene.opacities.double())
    assert float((torch.sigmoid(out.opacities.double()) - alpha).abs().max()) <= 0.5 / 255 + 1e-6
    qa, qb = _aligned_quats(scene.quats, out.quats)
    if version >= 3:
        assert np.abs(qa - qb).max() <= 2.0 / 511
    else:  # x,y,z in 8 bits with w >= 0; w itself is re-derived
        qa = qa * np.where(qa[:, :1] < 0, -1, 1)
        qb = qb * np.where(qb[:, :1] < 0, -1, 1)
        assert np.abs(qa - qb)[:, 1:].max() <= 0.5 / 127.5 + 1e-3
    rest = scene.sh_rest.double().numpy()
    got = out.sh_rest.double().numpy()
    inside = np.abs(rest) <= 1 - 1 / 16
    assert (np.abs(got - rest)[:, :3][inside[:, :3]] <= 4.5 / 128 + 1e-6).all()
    assert (np.abs(got - rest)[:, 3:][inside[:, 3:]] <= 8.5 / 128 + 1e-6).all()


def test_spz_coordinate_convention(tmp_path: Path) -> None:
    """SPZ stores RUB: a PLY point at +y (down) is stored with y negated, and read back as +y."""
    scene = GaussianScene.from_arrays(means=[[1.0, 2.0, 3.0]], scales=[[-1.0, -2.0, -3.0]],
                                      quats=[[1.0, 0.0, 0.0, 0.0]], opacities=[2.0], sh_dc=[[0.1, 0.2, 0.3]])
    save_scene(scene, tmp_path / "p.spz")
    raw = gzip.decompress((tmp_path / "p.spz").read_bytes())
    frac = raw[13]
    fixed = [int.from_bytes(raw[16 + 3 * i: 19 + 3 * i], "little", signed=True) / (1 << frac)
             for i in range(3)]
    assert fixed == [1.0, -2.0, -3.0]
    assert torch.allclose(load_scene(tmp_path / "p.spz").means, scene.means)


def test_splat_round_trip(tmp_path: Path) -> None:
    scene = synthetic_scene(200, sh_degree=2)
    assert save_scene(scene, tmp_path / "s.splat") == 200 * 32
    out = load_scene(tmp_path / "s.splat")
    assert out.sh_degree == 0 and torch.equal(out.means, scene.means)
    assert torch.allclose(out.scales, scene.scales, atol=1e-5)
    color = (0.5 + SH_C0 * scene.sh_dc).clamp(0, 1)
    assert float(((0.5 + SH_C0 * out.sh_dc) - color).abs().max()) <= 0.5 / 255 + 1e-5


# ----------------------------------------------------------------------------- bad input
def _ply_bytes(tmp_path: Path, scene: GaussianScene | None = None) -> bytes:
    save_scene(scene or synthetic_scene(20, sh_degree=0), tmp_path / "ok.ply")
    return (tmp_path / "ok.ply").read_bytes()


def test_wrong_vertex_count_is_refused(tmp_path: Path) -> None:
    bad = _ply_bytes(tmp_path).replace(b"element vertex 20", b"element vertex 900000000", 1)
    (tmp_path / "bad.ply").write_bytes(bad)
    with pytest.raises(FormatError, match="too short"):
        load_scene(tmp_path / "bad.ply")


def test_missing_properties_are_refused(tmp_path: Path) -> None:
    bad = _ply_bytes(tmp_path).replace(b"property float opacity", b"property float opacitx", 1)
    (tmp_path / "bad.ply").write_bytes(bad)
    with pytest.raises(FormatError, match="missing required properties opacity"):
        load_scene(tmp_path / "bad.ply")


def test_nan_values_are_refused(tmp_path: Path) -> None:
    """NaN colours are refused; NaN positions are dropped with a warning (issue 18)."""
    scene = synthetic_scene(20, sh_degree=0)
    scene.sh_dc[3, 1] = float("nan")
    save_scene(scene, tmp_path / "nan.ply")
    with pytest.raises(InputError, match="non-finite"):
        load_scene(tmp_path / "nan.ply")
    scene = synthetic_scene(20, sh_degree=0)
    scene.means[3, 1] = float("nan")
    save_scene(scene, tmp_path / "nanpos.ply")
    with pytest.warns(UserWarning, match="dropped 1 Gaussians with non-finite positions"):
        assert load_scene(tmp_path / "nanpos.ply").n == 19


def test_non_scene_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(FormatError, match="not a Gaussian scene"):
        load_scene(tmp_path / "x.png")
    (tmp_path / "mesh.ply").write_bytes(b"ply\nformat ascii 1.0\nelement face 1\nproperty list uchar int vi\n"
                                        b"end_header\n3 0 1 2\n")
    with pytest.raises(FormatError):
        load_scene(tmp_path / "mesh.ply")
    (tmp_path / "odd.splat").write_bytes(bytes(33))
    with pytest.raises(FormatError, match="multiple of 32"):
        load_scene(tmp_path / "odd.splat")


def test_spz_bad_magic_and_version(tmp_path: Path) -> None:
    header = struct.pack("<IIIBBBB", 0x12345678, 3, 1, 0, 12, 0, 0)
    (tmp_path / "m.spz").write_bytes(gzip.compress(header + bytes(20)))
    with pytest.raises(FormatError, match="bad SPZ magic"):
        load_scene(tmp_path / "m.spz")
    header = struct.pack("<IIIBBBB", spz_format.MAGIC, 9, 1, 0, 12, 0, 0)
    (tmp_path / "v.spz").write_bytes(gzip.compress(header + bytes(20)))
    with pytest.raises(FormatError, match="version 9"):
        load_scene(tmp_path / "v.spz")
    v4 = struct.pack("<IIIBBBBI12x", spz_format.MAGIC, 7, 1, 0, 12, 0, 5, 32)
    (tmp_path / "v4.spz").write_bytes(v4)
    with pytest.raises(FormatError, match="version 7"):
        load_scene(tmp_path / "v4.spz")


def test_gzip_bomb_is_refused_before_inflating(tmp_path: Path) -> None:
    header = struct.pack("<IIIBBBB", spz_format.MAGIC, 3, 2_000_000_000, 3, 12, 0, 0)
    bomb = gzip.compress(header + bytes(8 << 20), compresslevel=9)  # ~8 KB on disk
    (tmp_path / "bomb.spz").write_bytes(bomb)
    with pytest.raises(FormatError, match="more than this"):
        load_scene(tmp_path / "bomb.spz")


def test_spz_truncated_is_refused(tmp_path: Path) -> None:
    save_scene(synthetic_scene(100, sh_degree=1), tmp_path / "t.spz")
    raw = gzip.decompress((tmp_path / "t.spz").read_bytes())
    (tmp_path / "cut.spz").write_bytes(gzip.compress(raw[:-50]))
    with pytest.raises(FormatError, match="truncated"):
        load_scene(tmp_path / "cut.spz")


# ----------------------------------------------------------------------------- fuzzing
def _seed_files(root: Path) -> dict[str, bytes]:
    scene = synthetic_scene(40, sh_degree=1)
    out = {}
    for suffix in (".ply", ".compressed.ply", ".spz", ".splat"):
        save_scene(scene, root / f"seed{suffix}")
        out[suffix] = (root / f"seed{suffix}").read_bytes()
    from fieldpress.scenes.formats.spz import write as spz_write

    spz_write(scene, root / "seed4.spz", version=4)
    out["v4.spz"] = (root / "seed4.spz").read_bytes()
    return out


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return _seed_files(tmp_path_factory.mktemp("seeds"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_readers_raise_input_errors_only(seeds: dict[str, bytes], tmp_path: Path,
                                              data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(sorted(seeds)))
    blob = bytearray(seeds[key])
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "truncate", "insert", "digits"]))
        pos = data.draw(st.integers(0, max(len(blob) - 1, 0)))
        if kind == "flip" and blob:
            blob[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "truncate":
            del blob[pos:]
        elif kind == "insert":
            blob[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        elif kind == "digits":  # damage numbers in PLY headers (counts, types)
            head = bytes(blob[:400])
            idx = head.find(b"vertex ")
            if idx >= 0:
                blob[idx + 7: idx + 8] = str(data.draw(st.integers(0, 9))).encode()
    suffix = ".splat" if key == ".splat" else (".spz" if key.endswith(".spz") else ".ply")
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(bytes(blob))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            scene = load_scene(path)
        except InputError:
            return
    assert isinstance(scene, GaussianScene)
    scene.validate()


def test_registry_lists_every_format() -> None:
    names = set(formats())
    assert {"ply", "compressed-ply", "spz", "splat", "fpg"} <= names


def test_spz_v4_declared_counts_are_checked(tmp_path: Path) -> None:
    header = struct.pack("<IIIBBBBI12x", spz_format.MAGIC, 4, 2_000_000_000, 0, 12, 0, 5, 32)
    (tmp_path / "huge.spz").write_bytes(header + bytes(80 + 64))
    with pytest.raises(FormatError, match="more than this"):
        load_scene(tmp_path / "huge.spz")
    save_scene(synthetic_scene(64, sh_degree=1), tmp_path / "ok.spz", version=4)
    data = bytearray((tmp_path / "ok.spz").read_bytes())
    toc = struct.unpack_from("<I", data, 16)[0]  # after the coordinate-system extension record
    struct.pack_into("<Q", data, toc + 8, 10**12)  # first stream claims a terabyte once decoded
    (tmp_path / "lie.spz").write_bytes(bytes(data))
    with pytest.raises(FormatError, match="declares"):
        load_scene(tmp_path / "lie.spz")
