"""Our PLY layer (no plyfile): every real PLY round-trips byte-identically through read_ply/encode_ply,
binary little/big endian and ASCII agree value for value, float64 is kept or narrowed with a warning,
and damaged ASCII/binary data fails with one-line FormatErrors."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from fieldpress.errors import FormatError
from fieldpress.scenes import load_scene, save_scene
from fieldpress.scenes.formats.ply_header import encode_ply, parse_header, read_ply
from fieldpress.scenes.synthetic import synthetic_scene
from tests.conftest import shared_file

REAL = ["fruit_drops.ply", "inria_iter7000.ply", "donut_sh0.ply", "trailing_bytes.ply",
        "guitar.compressed.ply", "sh3_fixture.compressed.ply"]
ROOT = Path(__file__).resolve().parents[1]


def _read_quiet(data: bytes) -> tuple:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_ply(data)


@pytest.mark.parametrize("name", REAL)
def test_real_ply_round_trips_byte_identically(name: str) -> None:
    data = shared_file(f"gaussians/{name}").read_bytes()
    header, elements = _read_quiet(data)
    again = encode_ply(list(elements.items()), header.format, header.comments, header.obj_info)
    declared = header.size + sum(a.nbytes for a in elements.values())
    assert again == data[:declared]
    if name == "trailing_bytes.ply":
        assert declared == len(data) - 14029
    else:
        assert declared == len(data)


@pytest.mark.parametrize("name", ["fruit_drops.ply", "sh3_fixture.compressed.ply"])
def test_big_endian_and_ascii_read_back_the_same_values(name: str) -> None:
    header, elements = _read_quiet(shared_file(f"gaussians/{name}").read_bytes())
    for fmt in ("binary_big_endian", "ascii"):
        blob = encode_ply(list(elements.items()), fmt, header.comments)
        back_header, back = read_ply(blob)
        assert back_header.format == fmt and list(back) == list(elements)
        for el, arr in elements.items():
            assert back[el].dtype.names == arr.dtype.names
            for col in arr.dtype.names:
                assert back[el][col].dtype.str[1:] == arr[col].dtype.str[1:]
                assert np.array_equal(back[el][col], arr[col], equal_nan=True), (fmt, el, col)
        assert encode_ply(list(back.items()), fmt, back_header.comments) == blob


def test_every_property_type_and_obj_info_round_trip() -> None:
    types = ["i1", "u1", "i2", "u2", "i4", "u4", "f4", "f8"]
    table = np.zeros(3, dtype=[(f"c_{t}", t) for t in types])
    for t in types:
        info = np.iinfo(t) if t[0] in "iu" else np.finfo(t)
        table[f"c_{t}"] = [info.min, 0, info.max]
    extra = np.array([(1.5,), (2.25,)], dtype=[("w", "f8")])
    for fmt in ("binary_little_endian", "binary_big_endian", "ascii"):
        blob = encode_ply([("vertex", table), ("extra", extra)], fmt, ["made by a test"], ["obj  two spaces"])
        header, back = read_ply(blob)
        assert header.comments == ("made by a test",) and header.obj_info == ("obj  two spaces",)
        assert back["vertex"].tobytes() == table.astype(back["vertex"].dtype).tobytes()
        assert back["extra"]["w"].dtype.str[1:] == "f8" and back["extra"]["w"].tolist() == [1.5, 2.25]
        assert encode_ply(list(back.items()), fmt, header.comments, header.obj_info) == blob


def _ascii(body: bytes, props: str = "property float x\nproperty uchar c\n", count: int = 2) -> bytes:
    return f"ply\nformat ascii 1.0\nelement vertex {count}\n{props}end_header\n".encode() + body


@pytest.mark.parametrize(("body", "message"), [
    (b"1.0 2\n3.0 x\n", "not a number"),
    (b"1.0 2\n3.0 256\n", "not an integer in range"),
    (b"1.0 2\n3.0 1.5\n", "not an integer in range"),
    (b"1.0 2\n3.0 nan\n", "not an integer in range"),
    (b"1.0 2\n3.0\n", "ends early"),
])
def test_damaged_ascii_fails_with_one_line(body: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=message) as err:
        read_ply(_ascii(body))
    assert "\n" not in str(err.value)


def test_ascii_values_after_the_declared_data_warn() -> None:
    with pytest.warns(UserWarning, match="values after the declared ASCII PLY data"):
        _, out = read_ply(_ascii(b"1 2\n3 4\n5 6\n"))
    assert out["vertex"]["c"].tolist() == [2, 4]


def test_ascii_chunk_boundaries_do_not_split_values(monkeypatch: pytest.MonkeyPatch) -> None:
    import fieldpress.scenes.formats.ply_header as ply

    monkeypatch.setattr(ply, "ASCII_CHUNK", 3)
    _, out = read_ply(_ascii(b"  123.25 7\n\n-4.5e1   255 \n"))
    assert out["vertex"]["x"].tolist() == [123.25, -45.0] and out["vertex"]["c"].tolist() == [7, 255]


def test_unwritable_dtypes_and_names_are_refused() -> None:
    with pytest.raises(FormatError, match="no PLY property type"):
        encode_ply([("vertex", np.zeros(2, dtype=[("x", "i8")]))])
    with pytest.raises(FormatError, match="plain"):
        encode_ply([("vertex", np.zeros(2, dtype=[("a b", "f4")]))])
    with pytest.raises(FormatError, match="spans lines"):
        encode_ply([("vertex", np.zeros(2, dtype=[("x", "f4")]))], comments=["a\nb"])


def _float64_file(path: Path, x: np.ndarray, fmt: str | None = None) -> None:
    scene = synthetic_scene(len(x), sh_degree=0, seed=1)
    save_scene(scene, path)
    header, elements = read_ply(path.read_bytes())
    table = elements["vertex"]
    dtype = [(n, "f8" if n in ("x", "weight") else table.dtype[n].str) for n in table.dtype.names]
    wide = np.zeros(len(table), dtype=dtype + [("weight", "f8")])
    for n in table.dtype.names:
        wide[n] = table[n]
    wide["x"] = x
    wide["weight"] = x
    path.write_bytes(encode_ply([("vertex", wide)], fmt or header.format))


def test_float64_columns_exact_in_float32_read_silently_and_write_back_as_float64(tmp_path: Path) -> None:
    path = tmp_path / "f64.ply"
    _float64_file(path, np.array([0.5, -2.0, 3.25], np.float64))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scene = load_scene(path)
    assert scene.extras["weight"].dtype == np.float64
    save_scene(scene, tmp_path / "again.ply")
    assert (tmp_path / "again.ply").read_bytes() == path.read_bytes()


@pytest.mark.parametrize("fmt", ["binary_little_endian", "binary_big_endian", "ascii"])
def test_float64_columns_that_lose_precision_warn_by_name(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "f64.ply"
    x = np.array([0.1, 1e-300, 2.0 ** 60 + 1], np.float64)
    _float64_file(path, x, fmt)
    assert parse_header(path.read_bytes()).element("vertex").properties[0].dtype == "f8"
    with pytest.warns(UserWarning, match=re.escape("x (float64) narrowed to float32")):
        scene = load_scene(path)
    assert np.array_equal(scene.extras["weight"], x)  # an extra property keeps its float64 exactly
    assert np.array_equal(scene.means[:, 0].numpy(), x.astype(np.float32))  # narrowed, as the warning says
    save_scene(scene, tmp_path / "again.ply")  # written back as double, holding the narrowed values
    _, elements = read_ply((tmp_path / "again.ply").read_bytes())
    assert parse_header((tmp_path / "again.ply").read_bytes()).element("vertex").properties[0].dtype == "f8"
    assert np.array_equal(elements["vertex"]["x"], x.astype(np.float32).astype(np.float64))
    assert np.array_equal(elements["vertex"]["weight"], x)


def test_binary_header_counts_beyond_the_file_are_refused() -> None:
    blob = encode_ply([("vertex", np.zeros(4, dtype=[("x", "f4")]))])
    with pytest.raises(FormatError, match="too short"):
        read_ply(blob[:-1])


def test_plyfile_is_not_a_dependency_nor_imported() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    deps = pyproject.split("dependencies = [", 1)[1].split("]", 1)[0]
    assert "plyfile" not in deps
    sources = [p for p in (ROOT / "fieldpress").rglob("*.py") if "import plyfile" in p.read_text()
               or "from plyfile" in p.read_text()]
    assert sources == []
