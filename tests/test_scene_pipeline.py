"""The scene family's one pipeline shape and its registries: compress(input, options, device) ->
Result measured on its own bytes, the LightGaussian codec through the codec registry (new name and
the old one), QTensor-backed attribute quantization, and scene formats by entry point."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fieldpress.codec.container import encode_container, open_container
from fieldpress.codec.registry import Encoded, codec_for, encode_file
from fieldpress.errors import FormatError
from fieldpress.scenes.codecs import LIGHTGAUSSIAN
from fieldpress.scenes.lightgaussian.codec import CodecConfig, _dequantize, _quantize, read_fpg
from fieldpress.scenes.lightgaussian.vectree import VecTreeConfig
from fieldpress.scenes.synthetic import synthetic_scene

CONFIG = CodecConfig(vectree=VecTreeConfig(codebook_size=16, iterations=2, keep_bits=8))


def _scenes_equal(a, b) -> bool:
    names = ("means", "scales", "quats", "opacities", "sh_dc", "sh_rest")
    return a.n == b.n and all(torch.equal(getattr(a, n), getattr(b, n)) for n in names)


def test_codec_encodes_through_the_registry(tmp_path) -> None:
    scene = synthetic_scene(120, sh_degree=1, seed=2)
    encoded = LIGHTGAUSSIAN.encode(scene, np.arange(scene.n, dtype=np.float64), CONFIG)
    assert isinstance(encoded, Encoded) and "codec" not in encoded.header
    path = tmp_path / "s.fpg"
    path.write_bytes(encode_file(LIGHTGAUSSIAN, encoded))
    container = open_container(path)
    assert container.header["codec"] == "lightgaussian" and container.header["codec_version"] == 1
    assert codec_for("scene", container.header).name == "lightgaussian"
    # a file with the name written before the registry decodes the same
    old_header = {"codec": "lightgaussian-vectree", "codec_version": 1, **encoded.header}
    old = tmp_path / "old.fpg"
    old.write_bytes(encode_container("scene", old_header, encoded.streams))
    assert _scenes_equal(read_fpg(old), read_fpg(path))
    bad = tmp_path / "bad.fpg"
    bad.write_bytes(encode_container("scene", {**old_header, "codec_version": 2}, encoded.streams))
    with pytest.raises(FormatError, match="version"):
        read_fpg(bad)


def test_quantize_is_the_core_formula_and_checks_damage() -> None:
    from fieldpress.codec.quant import quant_params

    x = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    q, meta = _quantize(x, 9)
    assert q.dtype == np.uint16 and len(meta["scale"]) == 3
    t = torch.from_numpy(x)
    scale, zp, qmin, qmax = quant_params(t, 9, axis=1)
    ref = torch.clamp(torch.round(t / scale) + zp, qmin, qmax)
    assert np.array_equal(q, ref.numpy().astype(np.uint16))
    assert np.array_equal(_dequantize(q, meta, 3), ((ref - zp) * scale).numpy())
    with pytest.raises(FormatError):
        _dequantize(q, {**meta, "scale": meta["scale"][:2]}, 3)
    with pytest.raises(FormatError):
        _dequantize(q, {**meta, "bits": 4}, 3)  # symbols above 15
    with pytest.raises(FormatError):
        _dequantize(q[:, :2], meta, 3)


def test_compress_returns_the_file_and_metrics_of_its_bytes(tmp_path) -> None:
    from fieldpress.scenes.formats import save_scene
    from fieldpress.scenes.lightgaussian.pipeline import CompressOptions, compress, decode_bytes

    src = tmp_path / "in.ply"
    save_scene(synthetic_scene(150, sh_degree=1, seed=1), src)
    options = CompressOptions(preset="fast", codebook=16, eval_views=1, eval_width=24)
    result = compress(src, options)
    m = result.metrics
    assert result.codec is LIGHTGAUSSIAN and result.input == str(src)
    assert m["gaussians_in"] == m["gaussians_out"] == 150 and m["output_bytes"] == result.bytes
    assert m["bytes_per_gaussian"] == round(result.bytes / 150, 3)
    assert m["render_psnr"] > 20 and m["eval_views"] == 1 and "load" in m["stage_seconds"]
    out = tmp_path / "out.fpg"
    assert result.write(out) == result.bytes and out.read_bytes() == result.data
    assert _scenes_equal(read_fpg(out), decode_bytes(result.data))
    again = compress(src, CompressOptions(preset="fast", codebook=16, evaluate=False))
    assert again.data == result.data and again.metrics["render_psnr"] is None


def test_compress_splat_json_carries_the_design_names(tmp_path, capsys) -> None:
    from fieldpress.cli import run_command
    from fieldpress.scenes.formats import save_scene
    from fieldpress.scenes.lightgaussian.cli import compress_splat_command

    src = tmp_path / "in.ply"
    save_scene(synthetic_scene(100, sh_degree=0, seed=4), src)
    argv = [str(src), "--preset", "fast", "--eval-views", "1", "--eval-width", "24", "--json"]
    assert run_command(compress_splat_command, argv) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("gaussians_in", "gaussians_out", "bytes_per_gaussian", "render_psnr", "input_bytes",
                "output_bytes", "ratio", "prune", "stage_seconds"):
        assert key in out, key
    assert out["codec"] == "lightgaussian" and out["bytes"] == (tmp_path / "in.fpg").stat().st_size
    assert run_command(compress_splat_command, [str(src), "--eval-views", "0"]) == 2


def test_scene_formats_come_from_entry_points(tmp_path) -> None:
    from fieldpress.scenes.formats import formats, load_scene, save_scene
    from fieldpress.scenes.formats.registry import SceneFormat, format_specs, load_format

    specs = format_specs()
    assert {"ply", "compressed-ply", "spz", "splat", "fpg"} <= set(specs)
    for name, spec in specs.items():
        fmt = load_format(spec)
        assert isinstance(fmt, SceneFormat) and fmt.name == name
    fpg = formats()["fpg"]
    assert fpg.read is not None and fpg.write is not None  # read and write, from the lightgaussian package
    assert specs["fpg"].startswith("fieldpress.scenes.lightgaussian.")
    path = tmp_path / "s.fpg"
    save_scene(synthetic_scene(80, sh_degree=1, seed=5), path)
    assert open_container(path).header["codec"] == "lightgaussian" and load_scene(path).n == 80
