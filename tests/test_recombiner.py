"""RECOMBINER (`fit-image --model recombiner`): REC blocks, real files, bit-exact decoding, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fieldpress.cli import run_command
from fieldpress.codec.container import open_container
from fieldpress.errors import FormatError
from fieldpress.fields.cli import decode_image_command, fit_image_command
from fieldpress.fields.recombiner import rec
from fieldpress.fields.recombiner.config import NetConfig
from fieldpress.fields.recombiner.model import Prior, load_prior

TINY = NetConfig(patch=16, fourier_freqs=1, latent_grid=1, latent_dim=4, upsample_hidden=4, pe_dim=4,
                 hidden=(8,))
FAST = ["--model", "recombiner", "--steps", "30", "--block-bits", "8", "--finetune-chunks", "2"]


def _prior(path: Path, seed: int = 0, config: NetConfig = TINY) -> Path:
    with torch.random.fork_rng():  # the upsampler's init draws from the global RNG: pin it, so the prior
        torch.manual_seed(seed)  # (and every fit with it) is the same whichever tests ran before
        prior = Prior(config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        v = prior.init_vectors(16, g)
        prior.loc.copy_(v.mean(0))
        prior.scale.copy_(v.std(0) + 0.02)
        prior.kl_bits.copy_(torch.rand(config.n_params, generator=g) + 0.1)
    prior.save(path, {"test": True})
    return path


def _image(path: Path, w: int = 40, h: int = 24) -> Path:
    y, x = np.mgrid[0:h, 0:w]
    Image.fromarray(np.stack([x * 6, y * 9, (x + y) * 4], -1).astype(np.uint8)).save(path)
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    return {"prior": _prior(tmp_path / "prior.safetensors"), "src": _image(tmp_path / "in.png"),
            "out": tmp_path / "out.fpi", "png": tmp_path / "dec.png"}


def _fit(files: dict[str, Path], capsys: pytest.CaptureFixture[str], *flags: str) -> dict:
    argv = [str(files["src"]), "-o", str(files["out"]), *FAST, "--prior", str(files["prior"]), "--json",
            *flags]
    assert run_command(fit_image_command, argv) == 0
    return json.loads(capsys.readouterr().out)


def test_the_file_holds_exactly_the_index_bits_and_decodes_bit_for_bit(
        files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    from fieldpress.fields.pipeline import ImageOptions, fit, load_image

    summary = _fit(files, capsys, "--kl-budget", "0.5")
    data = files["out"].read_bytes()
    container = open_container(data)
    n = container.header["blocks"]
    assert n == round(0.5 * 40 * 24 / 8) and summary["index_bits"] == n * 8 == summary["blocks"] * 8
    payload = len(container.payload("indices"))
    assert payload == (n * 8 + 7) // 8  # the stream is the index bits, nothing else
    assert len(data) - payload < 700  # the rest is the container's header and table
    assert summary["bytes"] == len(data)
    # the decoder reproduces the encoder's reconstruction bit for bit
    options = ImageOptions(model="recombiner", steps=30, block_bits=8, finetune_chunks=2, kl_budget=0.5,
                           prior=str(files["prior"]))
    fitted = fit(load_image(files["src"]), options, "cpu")
    from fieldpress.fields.recombiner.codec import to_uint8

    decoded = open_container(data).decoder(prior=files["prior"]).image()
    assert np.array_equal(decoded, to_uint8(fitted.result.image))
    assert run_command(decode_image_command, [str(files["out"]), "-o", str(files["png"]),
                                              "--prior", str(files["prior"])]) == 0
    assert np.array_equal(np.asarray(Image.open(files["png"])), decoded)


def test_the_kl_spent_is_about_the_index_bits_written(files: dict[str, Path],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The beta rule holds each block's KL near its bit count before coding (within 20% once it has had
    150 steps to catch up), and each block is pulled toward the prior to at most its bits just before REC
    codes it, so the KL spent never exceeds the index bits the file holds, even after 30 steps (where the
    fit alone would spend about twice the bits)."""
    for steps, close_before in (("150", True), ("30", False)):
        summary = _fit(files, capsys, "--kl-budget", "0.5", "--steps", steps)
        index_bits = len(open_container(files["out"].read_bytes()).payload("indices")) * 8
        assert summary["index_bits"] <= index_bits < summary["index_bits"] + 8
        ratio = summary["kl_spent_bits"] / summary["index_bits"]
        assert summary["kl_spent_over_index_bits"] == pytest.approx(ratio, abs=1e-3)
        assert 0.7 <= ratio <= 1.0 + 1e-4 and summary["blocks_over_budget"] == 0, (steps, summary)
        if close_before:
            assert 0.8 <= summary["kl_bits_before_coding"] / summary["index_bits"] <= 1.2


def test_capping_a_block_moves_it_toward_the_prior_to_exactly_its_bits(tmp_path: Path) -> None:
    from fieldpress.fields.recombiner.config import EncodeConfig
    from fieldpress.fields.recombiner.encode import Layout, PosteriorFit, to_patches

    prior = load_prior(_prior(tmp_path / "p.safetensors"))
    layout = Layout(32, 16, prior.config.patch)
    image = torch.rand(16, 32, 3, generator=torch.Generator().manual_seed(0))
    blocks = rec.make_blocks(prior.kl_bits.numpy(), layout.n_patches, 6, 0)
    fit = PosteriorFit(prior, layout, to_patches(image, layout), EncodeConfig(kl_budget=0.5, block_bits=8),
                       blocks, torch.device("cpu"))
    with torch.no_grad():  # a posterior far from the prior: every block well over 8 bits
        fit.loc += 3 * fit.p_scale * torch.randn(fit.loc.shape, generator=torch.Generator().manual_seed(1))
    before = fit.block_kl_bits().clone()
    assert bool((before > 8).all())
    fit.cap_kl([0, 2, 3], 8.0)
    after = fit.block_kl_bits()
    assert torch.allclose(after[[0, 2, 3]], torch.full((3,), 8.0, dtype=torch.float64), atol=1e-3)
    assert torch.equal(after[[1, 4, 5]], before[[1, 4, 5]])  # the blocks not asked for are untouched


def test_info_verify_takes_the_prior_the_file_names(files: dict[str, Path],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from fieldpress.cli import info_command

    _fit(files, capsys)
    argv = [str(files["out"]), "--verify", "--json"]
    assert run_command(info_command, [*argv, "--prior", str(files["prior"])]) == 0
    verified = json.loads(capsys.readouterr().out)["verified"]
    assert verified["codec_checked"] and verified["streams"] == 1
    assert run_command(info_command, argv) == 2  # the shipped prior is not the one this file names
    err = capsys.readouterr().err.strip()
    assert "coded with prior" in err and len(err.splitlines()) == 1
    for bad, message in ((["--prior", str(files["prior"])], "only with --verify"),
                         (["--verify", "--prior", "/nonexistent.safetensors"], "no such file")):
        assert run_command(info_command, [str(files["out"]), *bad]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1


def test_encoding_is_deterministic_for_a_seed(files: dict[str, Path],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    _fit(files, capsys, "--seed", "3")
    first = files["out"].read_bytes()
    _fit(files, capsys, "--seed", "3")
    assert files["out"].read_bytes() == first
    _fit(files, capsys, "--seed", "4")
    assert files["out"].read_bytes() != first


def test_another_prior_is_a_one_line_error(files: dict[str, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    _fit(files, capsys)
    other = _prior(tmp_path / "other.safetensors", seed=1)
    argv = [str(files["out"]), "-o", str(files["png"]), "--prior", str(other)]
    assert run_command(decode_image_command, argv) == 2
    err = capsys.readouterr().err.strip()
    assert "coded with prior" in err and len(err.splitlines()) == 1 and not files["png"].exists()


@pytest.mark.parametrize("flags,message", [
    (["--kl-budget", "0"], "--kl-budget must be a positive"),
    (["--prior", "/nonexistent/prior.safetensors"], "no such prior file"),
    (["--block-bits", "0"], "--block-bits must be in"),
    (["--kl-budget", "1000"], "more than this prior can spend"),
])
def test_bad_input_exits_2_with_one_line(files: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                         flags: list[str], message: str) -> None:
    argv = [str(files["src"]), "-o", str(files["out"]), *FAST, "--prior", str(files["prior"]), *flags]
    assert run_command(fit_image_command, argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and not files["out"].exists()


def test_a_prior_of_another_shape_is_refused(files: dict[str, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from safetensors.torch import load, save

    data = files["prior"].read_bytes()
    header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])["__metadata__"]
    tensors = load(data)
    tensors["loc"] = torch.zeros(TINY.n_params + 3)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(save(tensors, metadata=header))
    src = files["src"].read_bytes()
    argv = [str(files["src"]), "-o", str(files["out"]), *FAST, "--prior", str(bad)]
    assert run_command(fit_image_command, argv) == 2
    err = capsys.readouterr().err.strip()
    assert "do not fit its config" in err and len(err.splitlines()) == 1
    assert files["src"].read_bytes() == src and not files["out"].exists()
    with pytest.raises(FormatError):
        load_prior(files["src"])  # not a safetensors file at all


def test_recombiner_flags_are_refused_by_other_models(files: dict[str, Path],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    argv = [str(files["src"]), "-o", str(files["out"]), "--model", "siren", "--kl-budget", "0.5"]
    assert run_command(fit_image_command, argv) == 2
    assert "--kl-budget do not apply to --model siren" in capsys.readouterr().err


def test_blocks_cut_every_dimension_once_into_the_asked_count() -> None:
    kl = np.random.default_rng(0).random(37) + 0.05
    for n in (1, 5, 40, 37 * 3):
        spec = rec.make_blocks(kl, 3, n, seed=2)
        assert spec.n == n and sorted(spec.order.tolist()) == list(range(111))
        assert (np.diff(spec.bounds) >= 1).all()
    with pytest.raises(FormatError):
        rec.make_blocks(kl, 3, 112, seed=2)


def test_indices_pack_at_the_block_bit_count() -> None:
    idx = np.array([0, 1, 255, 77, 128])
    packed = rec.pack_indices(idx, 8)
    assert packed.size == 5 and np.array_equal(rec.unpack_indices(packed, 5, 8), idx)
    idx = np.random.default_rng(1).integers(0, 1 << 13, 9)
    packed = rec.pack_indices(idx, 13)
    assert packed.size == (9 * 13 + 7) // 8 and np.array_equal(rec.unpack_indices(packed, 9, 13), idx)
    with pytest.raises(FormatError):
        rec.unpack_indices(packed[:-1], 9, 13)


def test_rec_picks_the_posterior_when_it_is_tight() -> None:
    """With q far from p and 2^12 candidates, the chosen sample lands much nearer q's mean than p's."""
    p_loc, p_scale = torch.zeros(4), torch.ones(4)
    q_loc, q_scale = torch.full((4,), 1.0), torch.full((4,), 0.3)
    spec = rec.Blocks(np.arange(4), np.array([0, 4]))
    chosen = rec.encode_blocks([0], spec, q_loc, q_scale, p_loc, p_scale, seed=5, bits=12)
    z = rec.decode_blocks(np.array([chosen[0]]), spec, p_loc, p_scale, seed=5, bits=12)
    assert float(((z - q_loc) ** 2).mean()) < float(((z - p_loc) ** 2).mean())


def test_train_prior_writes_a_small_prior_with_its_recipe(tmp_path: Path) -> None:
    from fieldpress.fields.recombiner.train_prior import main

    src = _image(tmp_path / "a.png", 64, 48)
    out = tmp_path / "p.safetensors"
    argv = [str(src), "-o", str(out), "--patch", "16", "--hidden", "8", "--latent-grid", "1",
            "--latent-dim", "4", "--pe-dim", "4", "--fourier-freqs", "1", "--steps", "12", "--em-every", "4",
            "--patches-per-image", "4", "--exclude-center", "0"]
    assert main(argv) == 0
    prior = load_prior(out)
    assert prior.config.patch == 16 and prior.meta["steps"] == 12 and prior.meta["data"] == ["a.png"]
    assert "train_prior" in prior.meta["command"] and prior.meta["cpu_seconds"] >= 0
    assert bool((prior.scale > 0).all()) and bool((prior.kl_bits >= 0).all())


def test_every_shipped_prior_is_named_by_its_fingerprint() -> None:
    from fieldpress.fields.recombiner import model

    shipped = sorted(model.PRIORS.glob("*.safetensors"))
    assert model.DEFAULT_PRIOR in shipped and len(shipped) >= 2
    for path in shipped:
        assert load_prior(path).fingerprint() == path.stem
        assert model.shipped_prior(path.stem) == path
    assert model.shipped_prior("../../etc/passwd") is None and model.shipped_prior("0" * 16) is None


def test_a_file_finds_its_shipped_prior_by_fingerprint(files: dict[str, Path], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --prior the decoder takes the shipped prior the header names, whichever it is."""
    import shutil

    from fieldpress.fields.recombiner import model

    _fit(files, capsys)
    reference = files["png"].with_name("ref.png")
    assert run_command(decode_image_command, [str(files["out"]), "-o", str(reference),
                                              "--prior", str(files["prior"])]) == 0
    shipped = tmp_path / "priors"
    shipped.mkdir()
    shutil.copy(files["prior"], shipped / f"{load_prior(files['prior']).fingerprint()}.safetensors")
    monkeypatch.setattr(model, "PRIORS", shipped)
    assert run_command(decode_image_command, [str(files["out"]), "-o", str(files["png"])]) == 0
    assert np.array_equal(np.asarray(Image.open(files["png"])), np.asarray(Image.open(reference)))
