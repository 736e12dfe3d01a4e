"""The image pipeline: compress -> Result measured on its own bytes, options, methods by model name
(a second image codec slots in without touching the pipeline), and the writer stamps the codec."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from fieldpress.cli import run_command
from fieldpress.codec.container import open_container, read_info
from fieldpress.codec.registry import Encoded, register_codec, unregister_codec
from fieldpress.errors import InputError
from fieldpress.fields import pipeline
from fieldpress.fields.cli import decode_image_command, fit_image_command
from fieldpress.fields.image_io import RasterInfo
from fieldpress.fields.pipeline import (
    FitHooks,
    ImageMethod,
    ImageOptions,
    SourceImage,
    code,
    compress,
    compress_image,
    decode,
    decoded_pixels,
    fit,
    image_ms_ssim,
    image_psnr,
)
from tests.helpers.threads import one_thread  # noqa: F401 - autouse fixture

GOLDEN = Path(__file__).resolve().parent / "golden"
CPU = torch.device("cpu")


def _pixels(h: int = 10, w: int = 14, c: int = 3) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    chans = [(np.sin(0.4 * x + 0.3 * y + k) * 0.45 + 0.5) * 255 for k in range(c)]
    return np.stack(chans, -1).round().astype(np.uint8)


def _source(h: int = 10, w: int = 14) -> SourceImage:
    return SourceImage(_pixels(h, w), RasterInfo(w, h, "RGB", 8, "RGB"))


def _maker():
    spec = importlib.util.spec_from_file_location("make_codec_golden", GOLDEN / "make_codec_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_options_refuse_bad_flags_with_the_flag_names() -> None:
    for kwargs, text in [({"bits": 1}, "--bits must be in 2..16"), ({"steps": 0}, "--steps must be positive"),
                         ({"minutes": 0.0}, "--minutes must be positive"), ({"params": 0}, "--params")]:
        with pytest.raises(InputError, match=text):
            ImageOptions(**kwargs)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ImageOptions().bits = 8  # type: ignore[misc]
    with pytest.raises(InputError, match="unknown model 'nosuch'"):
        pipeline.method_for("nosuch")


def test_compress_measures_the_bytes_it_returns(tmp_path) -> None:
    src = tmp_path / "in.png"
    Image.fromarray(_pixels()).save(src)
    result = compress(src, ImageOptions(model="siren", params=6000, steps=30, seed=2), CPU)
    assert result.codec.kind == "image" and result.codec.name == "field"
    assert result.input == str(src) and result.device == "cpu" and result.seconds > 0
    decoded = decoded_pixels(result.data)
    m = result.metrics
    assert m["psnr"] == pytest.approx(image_psnr(_pixels(), decoded, 8), abs=1e-3)
    assert m["psnr_frame_mean"] == m["psnr"]
    assert m["ms_ssim"] == pytest.approx(image_ms_ssim(_pixels(), decoded, 8), abs=1e-5)
    assert m["bpp"] == pytest.approx(result.bytes * 8 / (14 * 10), abs=1e-4)
    assert {"psnr_before_quant", "psnr_channels", "psnr_bit_depth", "model", "params", "steps", "fit_seconds",
            "size"} <= set(m)
    out = tmp_path / "out.fpi"
    assert result.write(out) == result.bytes and out.read_bytes() == result.data
    header = open_container(out).header
    assert header["codec"] == "field" and header["codec_version"] == 1 and header["format"] == 1
    assert header["psnr"] == pytest.approx(m["psnr"], abs=1e-3) and header["steps"] == 30
    assert read_info(out).summary["model"] == "siren"
    assert np.array_equal(decode(out).pixels, decoded) and decode(out).codec == "field"


def test_a_file_written_now_decodes_like_the_v1_golden() -> None:
    """The golden field.fpi (previous release) and one written now with its flags decode to the same
    bytes: only the header gained codec/codec_version."""
    maker = _maker()
    px = maker.image_pixels()
    h, w, _ = px.shape
    image = SourceImage(px, RasterInfo(w, h, "RGB", 8, "RGB"))
    options = ImageOptions(model="cam-ffn", params=9000, steps=20, seed=1, threads=1)
    result = compress_image(image, options, CPU)
    expected = json.loads((GOLDEN / "codecs" / "v1" / "expected.json").read_text())["field.fpi"]["sha256"]
    assert maker.sha256(decoded_pixels(result.data)) == expected
    old = decode(GOLDEN / "codecs" / "v1" / "field.fpi")
    assert old.codec == "field" and "codec" not in old.header  # claimed as a legacy file


def test_one_fit_codes_at_several_bits_and_restores_threads() -> None:
    torch.set_num_threads(1)
    image = _source()
    options = ImageOptions(model="ffn", params=12000, steps=15, threads=2)
    calls: list[int] = []
    fitted = fit(image, options, CPU, FitHooks(evaluate=lambda model: calls.append(1) or {}, eval_every=5))
    assert torch.get_num_threads() == 1 and fitted.steps == 15 and calls
    sizes = [code(fitted, image, dataclasses.replace(options, bits=b)).bytes for b in (8, 4)]
    assert sizes[0] > sizes[1]
    assert fitted.facts() == {"model": "ffn", "params": fitted.plan.n_params}


def test_ms_ssim_on_tiny_and_16_bit_images() -> None:
    a = np.arange(2 * 3 * 1, dtype=np.uint16).reshape(2, 3, 1) * 9000
    assert image_ms_ssim(a, a, 16) == pytest.approx(1.0)
    b = _pixels(9, 12, 2)
    noisy = np.clip(b.astype(int) + 9, 0, 255).astype(np.uint8)
    assert 0.0 < image_ms_ssim(b, noisy, 8) < 1.0


# ----------------------------------------------------------------------------- a second image codec
class _RawCodec:
    """A stand-in second image codec: the pixels stored as they are."""

    kind, name, version = "image", "rawtest", 1

    def encode(self, pixels: np.ndarray, info: RasterInfo) -> Encoded:
        return Encoded({"image": info.to_dict()}, {"pixels": pixels})

    def decode(self, container: Any, **options: Any) -> Any:
        info = RasterInfo.from_dict(container.header["image"])
        pixels = container.array("pixels")
        return type("RawDecoder", (), {"info": info, "image": lambda self, device="cpu": pixels})()

    def summarize(self, header: Any) -> dict[str, Any]:
        return {"size": "{width}x{height}".format(**header["image"])}


@dataclasses.dataclass
class _RawFit:
    image: SourceImage
    steps: int = 0
    seconds: float = 0.0

    def facts(self) -> dict[str, Any]:
        return {"model": "raw"}

    def preview(self) -> np.ndarray:
        return self.image.pixels

    def encode(self, options: ImageOptions) -> Encoded:
        return _RawCodec().encode(self.image.pixels, self.image.info)


@pytest.fixture
def raw_method() -> Iterator[None]:
    register_codec(_RawCodec())
    method = ImageMethod("rawtest", lambda image, options, device, hooks: _RawFit(image))
    pipeline.register_method("raw", method)
    try:
        yield
    finally:
        pipeline.METHODS.pop("raw")
        unregister_codec("image", "rawtest")


def test_a_second_codec_slots_in_by_model_name(tmp_path, capsys, raw_method) -> None:
    src, fpi, png = tmp_path / "in.png", tmp_path / "raw.fpi", tmp_path / "out.png"
    Image.fromarray(_pixels()).save(src)
    assert run_command(fit_image_command, [str(src), "-o", str(fpi), "--model", "raw", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["codec"] == "rawtest" and summary["psnr"] == 100.0 and summary["ms_ssim"] == 1.0
    assert open_container(fpi).header["codec"] == "rawtest"
    assert run_command(decode_image_command, [str(fpi), "-o", str(png), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["codec"] == "rawtest"
    assert np.array_equal(np.asarray(Image.open(png)), _pixels())
