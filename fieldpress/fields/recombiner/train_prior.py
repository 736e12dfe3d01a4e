"""Train a RECOMBINER prior on patches of training images (``python -m
fieldpress.fields.recombiner.train_prior IMAGES... -o prior.safetensors``): per-patch Gaussian posteriors,
the linear reparameterisation and the upsampler by Adam on MSE + beta x KL, with the prior refitted in
closed form every ``--em-every`` steps (the released code's EM, shortened); time counted in CPU seconds."""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fieldpress.errors import InputError
from fieldpress.fields.recombiner.config import NetConfig
from fieldpress.fields.recombiner.model import Prior, gaussian_kl, posterior_scale

LN2 = math.log(2.0)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Prior training: patches per image, the rate knob ``beta`` (KL weight per patch), steps and the
    E/M alternation, a CPU-seconds cap, and the central crop kept out of training (the bench's crops)."""

    patches_per_image: int = 24
    steps: int = 2000
    seconds: float | None = None
    em_every: int = 50
    lr: float = 0.005
    beta: float = 1e-5
    seed: int = 0
    exclude_center: int = 256
    init_log_scale: float = -4.0


def _load_rgb(path: Path) -> np.ndarray:
    from fieldpress.fields.image_io import read_image

    pixels, info = read_image(path)
    if info.bit_depth != 8:
        pixels = (pixels.astype(np.float64) / 257.0).round().astype(np.uint8)
    if pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, 2)
    return pixels[:, :, :3]


def _outside_center(h: int, w: int, y: int, x: int, p: int, c: int) -> bool:
    cy, cx = (h - c) // 2, (w - c) // 2
    return y + p <= cy or y >= cy + c or x + p <= cx or x >= cx + c


def sample_patches(images: list[np.ndarray], patch: int, per_image: int, seed: int,
                   exclude: int) -> torch.Tensor:
    """(M, P*P, 3) float patches at random positions, none overlapping each image's central
    ``exclude`` x ``exclude`` crop (0: no exclusion)."""
    rng = np.random.default_rng(seed)
    out = []
    for img in images:
        h, w = img.shape[:2]
        if h < patch or w < patch:
            continue
        taken, tries = 0, 0
        while taken < per_image and tries < 50 * per_image:
            tries += 1
            y, x = int(rng.integers(0, h - patch + 1)), int(rng.integers(0, w - patch + 1))
            if exclude and not _outside_center(h, w, y, x, patch, exclude):
                continue
            out.append(img[y:y + patch, x:x + patch].reshape(-1, 3))
            taken += 1
    if not out:
        raise InputError(f"no {patch}x{patch} patches could be cut from the images")
    return torch.from_numpy(np.stack(out).astype(np.float32) / 255.0)


def _m_step(prior: Prior, loc: torch.Tensor, raw: torch.Tensor) -> None:
    """The closed-form prior update: mean of the posterior means; variance = mean posterior variance +
    variance of the means."""
    with torch.no_grad():
        prior.loc.copy_(loc.mean(0))
        var = (posterior_scale(raw) ** 2).mean(0) + loc.var(0)
        prior.scale.copy_(var.clamp_min(1e-10).sqrt())


def train_prior(patches: torch.Tensor, net: NetConfig, config: TrainConfig, device: torch.device,
                log: Any = None) -> tuple[Prior, dict[str, Any]]:
    """Fit a prior to the patches; returns it and the training facts (CPU seconds, final MSE/KL)."""
    started = time.process_time()
    g = torch.Generator().manual_seed(config.seed)
    prior = Prior(net)
    m = patches.shape[0]
    loc = prior.init_vectors(1, g).repeat(m, 1) + 0.01 * torch.randn(m, net.n_params, generator=g)
    _m_step(prior, loc, torch.full_like(loc, config.init_log_scale))
    prior = prior.to(device)
    loc = loc.to(device).requires_grad_(True)
    raw = torch.full_like(loc, config.init_log_scale).requires_grad_(True)
    target = patches.to(device)
    params = [loc, raw, *prior.A.parameters(), *prior.upsampler.parameters()]
    opt = torch.optim.Adam(params, lr=config.lr)
    noise = torch.Generator(device=device).manual_seed(config.seed + 1)
    step, mse, kl = 0, float("nan"), float("nan")
    while step < config.steps:
        if config.seconds is not None and time.process_time() - started > config.seconds:
            break
        scale = posterior_scale(raw)
        v = loc + scale * torch.randn(loc.shape, generator=noise, device=device)
        err = torch.mean((prior(v[None])[0] - target) ** 2)
        kl_t = gaussian_kl(loc, scale, prior.loc.detach(), prior.scale.detach()).sum()
        loss = err * m + config.beta * kl_t
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % config.em_every == 0:
            _m_step(prior, loc.detach(), raw.detach())
        mse, kl = float(err.detach()), float(kl_t.detach()) / m / LN2
        if log and step % 100 == 0:
            log(f"step {step}: psnr {-10 * math.log10(max(mse, 1e-12)):.2f} dB, KL {kl:.1f} bits/patch")
    _m_step(prior, loc.detach(), raw.detach())
    with torch.no_grad():
        per_dim = gaussian_kl(loc, posterior_scale(raw), prior.loc, prior.scale).mean(0) / LN2
        prior.kl_bits.copy_(per_dim)
    prior = prior.cpu().round_to_stored()
    facts = {"steps": step, "cpu_seconds": round(time.process_time() - started, 1), "patches": m,
             "train_psnr": round(-10 * math.log10(max(mse, 1e-12)), 2), "kl_bits_per_patch": round(kl, 1),
             "config": dataclasses.asdict(config)}
    return prior, facts


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fieldpress.fields.recombiner.train_prior",
                                description="Train a RECOMBINER prior on patches of images.")
    p.add_argument("images", nargs="+", help="training images (PNG, JPEG, ...)")
    p.add_argument("-o", "--output", required=True, help="prior .safetensors to write")
    p.add_argument("--skimage", action="store_true", help="also train on scikit-image's bundled images")
    p.add_argument("--patch", type=int, default=32)
    p.add_argument("--hidden", default="12,12", help="hidden widths, e.g. 32,32,32 (the paper's)")
    p.add_argument("--latent-dim", type=int, default=16)
    p.add_argument("--latent-grid", type=int, default=2)
    p.add_argument("--fourier-freqs", type=int, default=2)
    p.add_argument("--pe-dim", type=int, default=8)
    for f in dataclasses.fields(TrainConfig):
        if f.name not in ("seconds",):
            p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    p.add_argument("--cpu-minutes", type=float, help="stop after this much CPU time")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    return p


def skimage_images() -> list[tuple[str, np.ndarray]]:
    """The colour and grey images scikit-image ships (its data module; none downloaded)."""
    import skimage.data as data

    names = ["astronaut", "camera", "cat", "chelsea", "coffee", "coins", "horse", "hubble_deep_field",
             "immunohistochemistry", "moon", "page", "retina", "rocket", "text"]
    out = []
    for name in names:
        try:
            img = np.asarray(getattr(data, name)())
        except Exception:  # noqa: BLE001 - an image that needs a download is skipped
            continue
        if img.dtype == bool:
            img = img.astype(np.uint8) * 255
        if img.dtype != np.uint8:
            img = (img / max(img.max(), 1) * 255).astype(np.uint8)
        img = np.repeat(img[:, :, None], 3, 2) if img.ndim == 2 else img[:, :, :3]
        out.append((f"skimage.data.{name}", img))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """The command: read the images, train, write the prior with its training facts as metadata."""
    args = _parser().parse_args(argv)
    try:
        torch.set_num_threads(args.threads)
        net = NetConfig(patch=args.patch, hidden=tuple(int(h) for h in args.hidden.split(",")),
                        latent_dim=args.latent_dim, latent_grid=args.latent_grid,
                        fourier_freqs=args.fourier_freqs, pe_dim=args.pe_dim)
        NetConfig.from_dict(net.to_dict())  # range checks
        sources = [(Path(p).name, _load_rgb(Path(p))) for p in args.images]
        if args.skimage:
            sources += skimage_images()
        config = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
                                if f.name != "seconds"},
                             seconds=None if args.cpu_minutes is None else args.cpu_minutes * 60)
        patches = sample_patches([s[1] for s in sources], net.patch, config.patches_per_image, config.seed,
                                 config.exclude_center)
        prior, facts = train_prior(patches, net, config, torch.device(args.device),
                                   log=lambda s: print(s, file=sys.stderr, flush=True))
        meta = {"command": "python -m fieldpress.fields.recombiner.train_prior " + " ".join(
                    sys.argv[1:] if argv is None else argv),
                "data": [s[0] for s in sources], "device": args.device, "threads": args.threads, **facts}
        size = prior.save(args.output, meta)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}: {size} bytes, {facts['steps']} steps in {facts['cpu_seconds']} CPU s, "
          f"train PSNR {facts['train_psnr']} dB, {facts['kl_bits_per_patch']} bits/patch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
