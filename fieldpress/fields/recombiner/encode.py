"""The RECOMBINER encoder: fit a mean-field Gaussian posterior over every patch's Bayesian vector with
the per-block beta rule, then code the blocks with REC a chunk at a time (largest KL first), fine-tuning
the uncoded blocks after each chunk; and the decoder's ``reconstruct`` that both sides share."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from fieldpress.errors import InputError
from fieldpress.fields.recombiner import rec
from fieldpress.fields.recombiner.config import EncodeConfig
from fieldpress.fields.recombiner.model import Prior, gaussian_kl, posterior_scale

LN2 = math.log(2.0)


@dataclasses.dataclass(frozen=True)
class Layout:
    """How an image maps to patches: its size and the padded patch grid (rows, cols)."""

    width: int
    height: int
    patch: int

    @property
    def grid(self) -> tuple[int, int]:
        """Patch rows and columns."""
        return (-(-self.height // self.patch), -(-self.width // self.patch))

    @property
    def n_patches(self) -> int:
        """Patches in the grid."""
        return self.grid[0] * self.grid[1]


def to_patches(image: Tensor, layout: Layout) -> Tensor:
    """(H, W, C) float image -> (N, P*P, C) patches of the edge-padded image, row-major."""
    hp, wp = layout.grid
    p = layout.patch
    x = image.permute(2, 0, 1)[None]
    x = torch.nn.functional.pad(x, (0, wp * p - layout.width, 0, hp * p - layout.height), mode="replicate")
    x = x[0].reshape(-1, hp, p, wp, p).permute(1, 3, 2, 4, 0)
    return x.reshape(hp * wp, p * p, -1)


def reconstruct(prior: Prior, vectors: Tensor, layout: Layout) -> Tensor:
    """The decoded image, (H, W, C) float32 in [0, 1], from (N, D) coded vectors (encoder and decoder)."""
    hp, wp = layout.grid
    p = layout.patch
    with torch.no_grad():
        out = prior(vectors[None])[0].clamp(0, 1)
    out = out.reshape(hp, wp, p, p, -1).permute(0, 2, 1, 3, 4).reshape(hp * p, wp * p, -1)
    return out[:layout.height, :layout.width]


def block_count(config: EncodeConfig, layout: Layout, dims: int) -> int:
    """Blocks the budget buys: round(bpp x pixels / bits), at least one (InputError above one per dim)."""
    n = max(1, round(config.kl_budget * layout.width * layout.height / config.block_bits))
    if n > dims * layout.n_patches:
        top = dims * layout.n_patches * config.block_bits / (layout.width * layout.height)
        raise InputError(f"--kl-budget {config.kl_budget} is more than this prior can spend "
                         f"(at most {top:.2f} bits per pixel)")
    return n


@dataclasses.dataclass
class EncodeResult:
    """What the encoder made: indices per block, the coded vectors, previews and its log."""

    indices: np.ndarray
    vectors: Tensor
    preview: Tensor  # the posterior mean's image before coding
    image: Tensor  # the coded image (what the decoder reproduces)
    steps: int
    seconds: float  # CPU seconds (time.process_time)
    kl_bits: float  # the posterior's KL to the prior just before coding, bits
    log: list[dict[str, float]]
    coded_kl_bits: np.ndarray | None = None  # each block's KL (bits) at the moment REC coded it


class PosteriorFit:
    """The posterior of every patch with the coded part frozen: ``loc``/``raw`` (N*D flattened),
    per-block betas, and the prior broadcast to the same shape."""

    def __init__(self, prior: Prior, layout: Layout, target: Tensor, config: EncodeConfig, blocks: rec.Blocks,
                 device: torch.device, seed: int = 0) -> None:
        d = prior.config.n_params
        self.seed = seed
        self.prior, self.layout, self.config, self.blocks = prior, layout, config, blocks
        self.target = target.to(device)
        self.p_loc = prior.loc.detach().to(device).repeat(layout.n_patches)
        self.p_scale = prior.scale.detach().to(device).repeat(layout.n_patches)
        self.loc = self.p_loc.clone().requires_grad_(True)
        start = (6.0 * config.init_scale_ratio * self.p_scale).clamp_min(1e-6)  # softplus(raw) = start
        self.raw = (start + torch.log(-torch.expm1(-start))).requires_grad_(True)  # inverse softplus
        self.beta = torch.full((blocks.n,), config.initial_beta, dtype=torch.float64, device=device)
        self.block_of = torch.from_numpy(blocks.block_of()).to(device)
        self.coded = torch.zeros_like(self.loc, dtype=torch.bool)
        self.coded_value = torch.zeros_like(self.loc)
        self.done = np.zeros(blocks.n, bool)
        self.shape = (layout.n_patches, d)
        self.steps = 0

    def block_kl_bits(self) -> Tensor:
        """KL(q || p) of every block, bits (float64)."""
        with torch.no_grad():
            kl = gaussian_kl(self.loc, posterior_scale(self.raw), self.p_loc, self.p_scale)
            return torch.zeros(self.blocks.n, dtype=torch.float64, device=kl.device).index_add_(
                0, self.block_of, kl.double()) / LN2

    def _adjust_beta(self) -> None:
        c = self.config
        kl = self.block_kl_bits()
        up = kl > c.block_bits + c.upper_buffer
        down = kl <= c.block_bits - c.lower_buffer
        self.beta = torch.where(up, self.beta * (1 + c.beta_step), self.beta)
        self.beta = torch.where(down, self.beta / (1 + c.beta_step), self.beta).clamp(0, 1e4)

    def train(self, steps: int, log: list[dict[str, float]]) -> None:
        """Adam on MSE x patches + sum of beta x KL over the uncoded blocks (a fresh optimizer each call)."""
        c = self.config
        opt = torch.optim.Adam([self.loc, self.raw], lr=c.lr)
        g = torch.Generator(device=self.loc.device).manual_seed((self.seed << 24) + self.steps + 1)
        for _ in range(steps):
            if self.steps % c.beta_every == 0:
                self._adjust_beta()
            scale = posterior_scale(self.raw)
            eps = torch.randn((c.samples, *self.loc.shape), generator=g, device=self.loc.device)
            v = torch.where(self.coded, self.coded_value, self.loc + scale * eps)
            pred = self.prior(v.reshape(c.samples, *self.shape))
            mse = torch.mean((pred - self.target) ** 2) * self.shape[0]
            kl = gaussian_kl(self.loc, scale, self.p_loc, self.p_scale) * (~self.coded)
            weight = self.beta.float()[self.block_of]
            loss = mse + (kl * weight).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            self.steps += 1
            if self.steps % 50 == 0:
                log.append({"step": self.steps, "mse": float(mse.detach()) / self.shape[0],
                            "kl_bits": float(kl.detach().sum()) / LN2})

    def cap_kl(self, blocks: list[int], bits: float, iterations: int = 50) -> None:
        """Pull each of ``blocks`` whose KL exceeds ``bits`` toward the prior, mean and log-scale along one
        straight line per block (``t`` = 1: as fitted, 0: the prior), to the ``t`` where its KL is ``bits``:
        REC with 2^bits candidates draws a faithful sample only from a posterior that spends at most that,
        and a short fit leaves blocks over budget (the paper's beta rule needs its 30k steps)."""
        with torch.no_grad():
            chosen = torch.zeros(self.blocks.n, dtype=torch.bool, device=self.loc.device)
            chosen[torch.as_tensor(blocks, dtype=torch.long, device=self.loc.device)] = True
            mask = chosen[self.block_of]
            q_loc, log_q = self.loc[mask], torch.log(posterior_scale(self.raw[mask]))
            p_loc, log_p = self.p_loc[mask], torch.log(self.p_scale[mask])
            owner = self.block_of[mask]

            def kl_at(t: Tensor) -> Tensor:
                tt = t[owner]
                kl = gaussian_kl(p_loc + tt * (q_loc - p_loc), torch.exp(log_p + tt * (log_q - log_p)),
                                 p_loc, self.p_scale[mask])
                return torch.zeros_like(t).index_add_(0, owner, kl.double()) / LN2

            ones = torch.ones(self.blocks.n, dtype=torch.float64, device=self.loc.device)
            over = kl_at(ones) > bits
            if not bool(over.any()):
                return
            lo, hi = torch.zeros_like(ones), ones.clone()
            for _ in range(iterations):  # KL grows with t along the line (convex, 0 at t = 0): bisect
                mid = (lo + hi) / 2
                above = kl_at(mid) > bits
                hi, lo = torch.where(above, mid, hi), torch.where(above, lo, mid)
            t = torch.where(over, lo, ones).to(self.loc.dtype)[owner]
            scale = torch.exp(log_p + t * (log_q - log_p)) * 6.0
            self.loc[mask] = p_loc + t * (q_loc - p_loc)
            self.raw[mask] = scale + torch.log(-torch.expm1(-scale))  # inverse of softplus(raw) / 6

    def code(self, blocks: list[int], seed: int) -> dict[int, int]:
        """REC-code ``blocks`` on the CPU and freeze their samples."""
        cpu = torch.device("cpu")
        with torch.no_grad():
            q_loc, q_scale = self.loc.detach().to(cpu), posterior_scale(self.raw.detach()).to(cpu)
            p_loc, p_scale = self.p_loc.to(cpu), self.p_scale.to(cpu)
        bits = self.config.block_bits
        chosen = rec.encode_blocks(blocks, self.blocks, q_loc, q_scale, p_loc, p_scale, seed, bits)
        values = self.coded_value.detach().to(cpu).clone()
        rec.fill_samples(blocks, chosen, self.blocks, p_loc, p_scale, seed, bits, values)
        mask = torch.from_numpy(np.isin(self.blocks.block_of(), blocks)).to(self.loc.device)
        self.coded_value = values.to(self.loc.device)
        self.coded |= mask
        self.done[blocks] = True
        return chosen


def encode_image(prior: Prior, image: Tensor, config: EncodeConfig, seed: int, device: torch.device,
                 progress: Callable[[str], None] | None = None) -> EncodeResult:
    """Fit, code every block and reconstruct; ``image`` is (H, W, C) float32 in [0, 1]."""
    started = time.process_time()
    layout = Layout(image.shape[1], image.shape[0], prior.config.patch)
    prior = prior.to(device)
    n = block_count(config, layout, prior.config.n_params)
    blocks = rec.make_blocks(prior.kl_bits.cpu().numpy(), layout.n_patches, n, seed)
    fit = PosteriorFit(prior, layout, to_patches(image, layout), config, blocks, device, seed)
    log: list[dict[str, float]] = []
    fit.train(config.steps, log)
    with torch.no_grad():
        preview = reconstruct(prior, fit.loc.detach().reshape(fit.shape), layout).cpu()
    kl_total = float(fit.block_kl_bits().sum())
    indices = np.zeros(n, np.int64)
    spent = np.zeros(n, np.float64)  # the KL each block actually spends: its KL when it is coded
    chunks = min(config.finetune_chunks, n)
    for c in range(chunks):
        remaining = np.flatnonzero(~fit.done)
        take = len(remaining) // (chunks - c)
        kl_all = fit.block_kl_bits().cpu().numpy()
        kl = kl_all[remaining]
        chosen = remaining[np.argsort(-kl, kind="stable")[:take]].tolist()  # the paper's largest-KL-first
        if config.cap_kl:
            fit.cap_kl(chosen, config.block_bits)
            kl_all = fit.block_kl_bits().cpu().numpy()
        spent[chosen] = kl_all[chosen]
        for b, i in fit.code(chosen, seed).items():
            indices[b] = i
        if c < chunks - 1 and config.finetune_steps:
            fit.train(config.finetune_steps, log)
        if progress:
            progress(f"coded {int(fit.done.sum())}/{n} blocks")
    vectors = fit.coded_value.detach().cpu().reshape(fit.shape)
    coded = reconstruct(prior.cpu(), vectors, layout)
    seconds = time.process_time() - started
    return EncodeResult(indices, vectors, preview, coded, fit.steps, seconds, kl_total, log, spent)
