"""fit-image / decode-image: round trips in each mode, summaries, and bad input (exit 2)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import shared_file
from PIL import Image

from fieldpress.cli import run_command
from fieldpress.codec.container import read_info
from fieldpress.fields.cli import decode_image_command, fit_image_command
from fieldpress.fields.image_io import read_image, write_png
from tests.helpers.threads import one_thread  # noqa: F401 - autouse fixture


def _pattern(h: int, w: int, c: int, peak: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    chans = [(np.sin(0.4 * x + 0.3 * y + k) * 0.45 + 0.5) for k in range(c)]
    return np.round(np.stack(chans, -1) * peak)


def decoded_size(fpi) -> int:
    image = read_info(fpi).header["image"]
    return image["width"] * image["height"]


def _fit_decode(tmp_path, src, capsys, *extra: str) -> tuple[dict, np.ndarray]:
    fpi, png = tmp_path / "out.fpi", tmp_path / "dec.png"
    argv = [str(src), "-o", str(fpi), "--steps", "40", "--params", "6k", "--model", "siren", "--json", *extra]
    assert run_command(fit_image_command, argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert run_command(decode_image_command, [str(fpi), "-o", str(png), "--json"]) == 0
    capsys.readouterr()
    assert summary["bytes"] == fpi.stat().st_size
    assert summary["codec"] == "field" and 0.0 < summary["ms_ssim"] <= 1.0
    assert summary["psnr_frame_mean"] == summary["psnr"]
    assert summary["bpp"] == pytest.approx(summary["bytes"] * 8 / decoded_size(fpi), abs=1e-4)
    decoded, _ = read_image(png)
    return summary, decoded


@pytest.mark.parametrize("mode,channels", [("L", 1), ("LA", 2), ("RGBA", 4)])
def test_8bit_modes_round_trip(tmp_path, capsys, mode: str, channels: int) -> None:
    arr = _pattern(10, 14, channels, 255).astype(np.uint8)
    src = tmp_path / "in.png"
    Image.fromarray(arr[..., 0] if channels == 1 else arr, mode=mode).save(src)
    summary, decoded = _fit_decode(tmp_path, src, capsys)
    assert Image.open(tmp_path / "dec.png").mode == mode
    assert decoded.shape == (10, 14, channels) and decoded.dtype == np.uint8
    assert summary["psnr_channels"] == mode and summary["psnr_bit_depth"] == 8
    assert summary["psnr"] > 10.0 and summary["size"] == "14x10"
    # the float model before 8-bit weights: quantization may cost a little, never gain much
    assert summary["psnr_before_quant"] > 10.0 and summary["psnr"] < summary["psnr_before_quant"] + 0.5


@pytest.mark.parametrize("channels", [1, 3])
def test_16bit_round_trip(tmp_path, capsys, channels: int) -> None:
    from fieldpress.fields.image_io import RasterInfo

    arr = _pattern(9, 12, channels, 65535).astype(np.uint16)
    src = tmp_path / "in16.png"
    write_png(src, arr, RasterInfo(12, 9, {1: "L", 3: "RGB"}[channels], 16))
    loaded, info = read_image(src)
    assert info.bit_depth == 16 and np.array_equal(loaded, arr)
    summary, decoded = _fit_decode(tmp_path, src, capsys)
    assert decoded.dtype == np.uint16 and decoded.shape == arr.shape
    assert summary["psnr_bit_depth"] == 16
    # PSNR is measured at 16 bits: recompute it from the decoded file
    mse = np.mean((decoded.astype(np.float64) - arr) ** 2)
    assert summary["psnr"] == pytest.approx(10 * np.log10(65535.0**2 / mse), abs=0.01)


def test_info_summary_and_determinism(tmp_path, capsys) -> None:
    arr = _pattern(8, 8, 3, 255).astype(np.uint8)
    src = tmp_path / "rgb.png"
    Image.fromarray(arr).save(src)
    argv = [str(src), "--steps", "20", "--params", "6k", "--model", "ffn", "--params", "12k", "--json"]
    assert run_command(fit_image_command, [*argv, "-o", str(tmp_path / "a.fpi")]) == 0
    assert run_command(fit_image_command, [*argv, "-o", str(tmp_path / "b.fpi")]) == 0
    capsys.readouterr()
    assert (tmp_path / "a.fpi").read_bytes() == (tmp_path / "b.fpi").read_bytes()
    info = read_info(tmp_path / "a.fpi").to_dict()
    assert info["kind"] == "image"
    assert (
        info["summary"]["size"] == "8x8" and info["summary"]["model"] == "ffn" and "psnr" in info["summary"]
    )


def _exit_and_message(argv, capsys, command=fit_image_command) -> tuple[int, str]:
    code = run_command(command, argv)
    err = capsys.readouterr().err.strip()
    return code, err


def test_bad_input_exits_2(tmp_path, capsys) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not an image at all")
    code, err = _exit_and_message([str(text)], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "not a readable image" in err

    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (1, 1)).save(tiny)
    code, err = _exit_and_message([str(tiny)], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "too small" in err

    ok = tmp_path / "ok.png"
    Image.fromarray(_pattern(8, 8, 3, 255).astype(np.uint8)).save(ok)
    code, err = _exit_and_message([str(ok), "--model", "cam-ffn", "--params", "100"], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "too small" in err

    code, err = _exit_and_message([str(tmp_path / "missing.png")], capsys)
    assert code == 2 and "no such file" in err

    code, err = _exit_and_message([str(text), "-o", str(tmp_path / "x.png")], capsys, decode_image_command)
    assert code == 2 and len(err.splitlines()) == 1


@pytest.mark.slow
def test_kodak_minutes_bar(tmp_path, capsys) -> None:
    """The issue's bar: fit-image kodim01.png --minutes 3 writes a file that decodes at the input size."""
    src = shared_file("images/kodak/kodim01.png")
    fpi, png = tmp_path / "k.fpi", tmp_path / "k.png"
    argv = [str(src), "-o", str(fpi), "--model", "cam-ffn", "--minutes", "3", "--json"]
    assert run_command(fit_image_command, argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["psnr"] > 20 and summary["seconds"] < 200
    assert run_command(decode_image_command, [str(fpi), "-o", str(png)]) == 0
    assert Image.open(png).size == Image.open(src).size


def test_hostile_header_is_refused(tmp_path, capsys) -> None:
    from fieldpress.codec.container import write_container

    header = {
        "format": 1,
        "image": {"width": 4, "height": 4, "mode": "RGB", "bit_depth": 8},
        "model": {
            "name": "ffn",
            "n_params": 10,
            "encoding": {"otype": "Identity"},
            "network": {"otype": "MLP", "n_neurons": 10**7, "n_hidden_layers": 2},
        },
        "seed": 0,
        "quant": {},
    }
    path = tmp_path / "bad.fpi"
    write_container(path, "image", header, {"x": np.zeros(1, np.uint8)})
    code, err = _exit_and_message([str(path), "-o", str(tmp_path / "x.png")], capsys, decode_image_command)
    assert code == 2 and "unusable model" in err


def test_minutes_budget_sets_the_steps(tmp_path, capsys) -> None:
    src = tmp_path / "m.png"
    Image.fromarray(_pattern(12, 16, 3, 255).astype(np.uint8)).save(src)
    argv = [str(src), "-o", str(tmp_path / "m.fpi"), "--model", "cam-ffn", "--minutes", "0.1",
            "--params", "12k", "--json"]
    assert run_command(fit_image_command, argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] >= 10 and summary["seconds"] < 6.0 * 1.5


@pytest.mark.parametrize("mode,bits,expected", [("RGB", 8, "latent"), ("L", 8, "cam-ffn"),
                                                ("RGBA", 8, "cam-ffn"), ("RGB", 16, "cam-ffn")])
def test_the_default_model_follows_the_image(tmp_path, capsys, mode: str, bits: int, expected: str) -> None:
    """Without --model: the latent codec for 8-bit RGB, a cam-ffn field for grey, alpha or 16 bits."""
    from fieldpress.fields.image_io import RasterInfo

    channels = len(mode)
    arr = _pattern(8, 10, channels, 255 if bits == 8 else 65535).astype(np.uint8 if bits == 8 else np.uint16)
    src = tmp_path / "in.png"
    write_png(src, arr, RasterInfo(10, 8, mode, bits))
    argv = [str(src), "-o", str(tmp_path / "o.fpi"), "--steps", "3", "--params", "12k", "--json"]
    assert run_command(fit_image_command, argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["model"] == expected
    assert summary["codec"] == ("latent" if expected == "latent" else "field")
    if expected != "latent":  # rate flags name why the default is not the latent codec here
        code, err = _exit_and_message([*argv, "--quality", "3"], capsys)
        assert code == 2 and "8-bit RGB" in err and len(err.splitlines()) == 1
