"""Deep validation: `fieldpress info --verify` decodes every stream, so a crafted file whose CRCs are
all valid (the ANS table lying about its symbols, symbols outside the bit width, a bad rotation index,
side-information out of range) passes plain `info` and fails `info --verify` with one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fieldpress.cli import info_command, run_command
from fieldpress.codec import entropy
from fieldpress.codec.container import encode_container, open_container, read_info
from fieldpress.codec.verify import state_metas, verify_container
from fieldpress.errors import FormatError

GOLDEN = Path(__file__).parent / "golden" / "codecs"
FILES = sorted(p for p in GOLDEN.glob("*/*.f*") if p.suffix in (".fpv", ".fpi", ".fpg"))


def _rewrite(src: Path, dst: Path, change: dict[str, np.ndarray],
             codecs: dict[str, str] | None = None) -> Path:
    """The same container with some streams replaced; every CRC valid (written by our writer)."""
    c = open_container(src)
    arrays = c.arrays()
    arrays.update(change)
    stream_codecs = {name: c.streams[name].codec for name in arrays}
    stream_codecs.update(codecs or {})
    dst.write_bytes(encode_container(c.kind, c.header, arrays, stream_codecs))
    return dst


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_golden_file_verifies(path: Path) -> None:
    report = verify_container(open_container(path))
    assert report.streams == len(open_container(path).names) and report.codec_checked
    assert report.state_dicts == len(list(state_metas(open_container(path).header)))


def test_rewrite_without_changes_still_verifies(tmp_path: Path) -> None:
    same = _rewrite(GOLDEN / "v1" / "lightgaussian.fpg", tmp_path / "same.fpg", {})
    assert verify_container(open_container(same)).codec_checked


def _table_len(payload: bytes) -> int:
    """Bytes of an ANS payload's table (mode, alphabet, counts) before the coded words."""
    (k, _), pos = entropy.varint_decode(payload, 2, 1)
    if payload[0] == 1:
        _, pos = entropy.varint_decode(payload, int(k) - 1, pos)
    return entropy.varint_decode(payload, int(k), pos)[1]


def _run_info(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = run_command(info_command, list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_ans_table_that_lies_passes_info_and_fails_verify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    src = GOLDEN / "v1" / "lightgaussian.fpg"
    axis = open_container(src).array("rot/axis")
    assert open_container(src).streams["rot/axis"].codec == "ans"
    honest = entropy.ans_encode(axis)
    other = axis.copy()
    other[: len(other) // 3] = axis.max()  # the same alphabet, other counts
    lying = entropy.ans_encode(other)
    crafted = honest[:_table_len(honest)] + lying[_table_len(lying):]  # honest table, other symbols
    assert crafted != honest
    real = entropy.CODECS["ans"]
    def encode(a: np.ndarray) -> bytes:
        return crafted if np.array_equal(a, axis) and a.dtype == axis.dtype else real.encode(a)

    monkeypatch.setitem(entropy.CODECS, "ans", entropy.Codec(real.id, "ans", encode, real.decode))
    bad = _rewrite(src, tmp_path / "bad.fpg", {"rot/axis": axis}, {"rot/axis": "ans"})
    monkeypatch.setitem(entropy.CODECS, "ans", real)
    read_info(bad)  # every CRC is valid
    code, out, _ = _run_info(capsys, str(bad), "--json")
    assert code == 0 and "verified" not in json.loads(out)
    with pytest.raises(FormatError, match="rot/axis") as err:
        verify_container(open_container(bad))
    assert "\n" not in str(err.value)


def test_rotation_index_out_of_range_fails_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = GOLDEN / "v1" / "lightgaussian.fpg"
    axis = open_container(src).array("rot/axis").copy()
    axis[3] = 7
    bad = _rewrite(src, tmp_path / "bad.fpg", {"rot/axis": axis})
    assert _run_info(capsys, str(bad))[0] == 0
    with pytest.raises(FormatError, match="component index out of range"):
        verify_container(open_container(bad))


def test_weight_symbols_beyond_their_bits_fail_verify(tmp_path: Path) -> None:
    src = GOLDEN / "v1" / "field.fpi"
    name = "w/network.hidden.0.weight"
    w = open_container(src).array(name).copy()
    assert int(open_container(src).header["quant"]["bits"][0]) == 6 and w.max() < 64
    w.flat[5] = 200
    bad = _rewrite(src, tmp_path / "bad.fpi", {name: w})
    with pytest.raises(FormatError, match="symbols outside 0..63") as err:
        verify_container(open_container(bad))
    assert "quant" in str(err.value)


def test_weights_of_the_wrong_shape_fail_verify(tmp_path: Path) -> None:
    src = GOLDEN / "v1" / "field.fpi"
    name = "w/network.hidden.1.weight"
    w = open_container(src).array(name)
    bad = _rewrite(src, tmp_path / "bad.fpi", {name: np.concatenate([w, w[:1]])})
    with pytest.raises(FormatError):
        verify_container(open_container(bad))


def test_side_information_out_of_range_fails_verify(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    src = GOLDEN / "v2-video" / "hnerv.fpv"
    c = open_container(src)
    chunk = next(n for n in c.names if n.startswith("embedding/0"))
    e = c.array(chunk).copy()
    e.flat[0] = 255  # 6-bit side information
    bad = _rewrite(src, tmp_path / "bad.fpv", {chunk: e})
    assert _run_info(capsys, str(bad))[0] == 0
    code, out, err = _run_info(capsys, str(bad), "--verify")
    assert code == 2 and out == "" and err.count("\n") == 1 and "symbols outside" in err
    with pytest.raises(FormatError, match="symbols outside"):
        verify_container(open_container(bad))


def test_cli_verify_prints_what_it_decoded(capsys: pytest.CaptureFixture[str]) -> None:
    path = GOLDEN / "v2-video" / "hnerv.fpv"
    code, out, _ = _run_info(capsys, str(path), "--verify", "--json")
    assert code == 0
    verified = json.loads(out)["verified"]
    assert verified["streams"] == len(open_container(path).names) and verified["decoded_bytes"] > 0
    code, out, _ = _run_info(capsys, str(path), "--verify")
    flat = " ".join(out.split())
    assert code == 0 and "verified: " in flat and "codec layout checked" in flat
