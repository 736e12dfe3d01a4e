"""The RECOMBINER prior and network: a diagonal Gaussian prior over each patch's Bayesian vector (the
linearly reparameterised INR weights ``h`` and the positional latents), the learned per-layer maps
``W = h A`` and the upsampling network, saved as safetensors (no pickle) and named by a content hash."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fieldpress.errors import FormatError, InputError
from fieldpress.fields.recombiner.config import NetConfig

PRIORS = Path(__file__).with_name("priors")  # every prior fieldpress has shipped: <fingerprint>.safetensors
DEFAULT_FINGERPRINT = "0c27fb36b069b9c4"  # kodim01-12 + scikit-image, 312 patches (the one encoding uses)
DEFAULT_PRIOR = PRIORS / f"{DEFAULT_FINGERPRINT}.safetensors"
MAX_PRIOR_BYTES = 64 << 20


def shipped_prior(fingerprint: str) -> Path | None:
    """The shipped prior file of that fingerprint (what a file's header names), or None."""
    if not (len(fingerprint) == 16 and all(c in "0123456789abcdef" for c in fingerprint)):
        return None
    path = PRIORS / f"{fingerprint}.safetensors"
    return path if path.is_file() else None


def posterior_scale(raw: Tensor) -> Tensor:
    """The posterior's standard deviation from its free parameter (the released code's softplus / 6)."""
    return F.softplus(raw) / 6.0


def gaussian_kl(q_loc: Tensor, q_scale: Tensor, p_loc: Tensor, p_scale: Tensor) -> Tensor:
    """KL(N(q_loc, q_scale^2) || N(p_loc, p_scale^2)) per dimension, in nats."""
    return torch.log(p_scale / q_scale) + (q_scale ** 2 + (q_loc - p_loc) ** 2) / (2 * p_scale ** 2) - 0.5


class Upsampler(nn.Module):
    """A patch's positional latents -> per-pixel features: nearest x4, conv 3x3, LeakyReLU, nearest to
    the pixel grid, conv 3x3 (the paper's upsampling network, one stage shorter)."""

    def __init__(self, config: NetConfig) -> None:
        super().__init__()
        self.factors = (4, config.patch // config.latent_grid // 4)
        pad = {"padding": 1, "padding_mode": "replicate"}
        self.conv1 = nn.Conv2d(config.latent_dim, config.upsample_hidden, 3, **pad)
        self.conv2 = nn.Conv2d(config.upsample_hidden, config.pe_dim, 3, **pad)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, g, g) latents -> (B, pe_dim, P, P) features."""
        x = F.interpolate(x, scale_factor=self.factors[0], mode="nearest")
        x = F.leaky_relu(self.conv1(x))
        x = F.interpolate(x, scale_factor=self.factors[1], mode="nearest")
        return self.conv2(x)


class Prior(nn.Module):
    """The learned pieces shared by every image: prior ``loc``/``scale`` (per Bayesian dimension of a
    patch), the linear reparameterisation ``A`` (one square matrix per layer), the upsampler, and
    ``kl_bits`` (the mean KL per dimension of the training posteriors, used to cut REC blocks)."""

    def __init__(self, config: NetConfig) -> None:
        super().__init__()
        self.config = config
        n = config.n_params
        self.loc = nn.Parameter(torch.zeros(n))
        self.scale = nn.Parameter(torch.ones(n))
        self.A = nn.ParameterList([nn.Parameter(torch.eye(s)) for s in config.layer_sizes])
        self.upsampler = Upsampler(config)
        self.register_buffer("kl_bits", torch.ones(n))
        self.meta: dict[str, Any] = {}

    # ------------------------------------------------------------------ the network
    def fourier(self, device: Any = "cpu") -> Tensor:
        """(P*P, 4f) Fourier features of the patch-local pixel centres in [-1, 1]."""
        p, f = self.config.patch, self.config.fourier_freqs
        c = (torch.arange(p, dtype=torch.float32, device=device) + 0.5) / p * 2 - 1
        yy, xx = torch.meshgrid(c, c, indexing="ij")
        xy = torch.stack([xx.reshape(-1), yy.reshape(-1)], -1)
        freqs = (2.0 ** torch.arange(f, dtype=torch.float32, device=device)) * math.pi
        arg = (xy[:, :, None] * freqs).reshape(xy.shape[0], -1)
        return torch.cat([torch.sin(arg), torch.cos(arg)], -1)

    def positional(self, latents: Tensor) -> Tensor:
        """(S, N, g*g*C) positional latents -> (S, N, P*P, pe_dim) pixel features, each patch upsampled
        on its own (the same at prior training, on single patches, as at encoding)."""
        c = self.config
        s, n, g = latents.shape[0], latents.shape[1], c.latent_grid
        z = latents.reshape(s * n, g, g, c.latent_dim).permute(0, 3, 1, 2)
        pe = self.upsampler(z)  # (S*N, pe, P, P)
        return pe.permute(0, 2, 3, 1).reshape(s, n, c.patch * c.patch, c.pe_dim)

    def forward(self, vectors: Tensor) -> Tensor:
        """(S, N, n_params) Bayesian vectors of N patches -> (S, N, P*P, out) colours."""
        c = self.config
        s, n = vectors.shape[:2]
        h, latents = vectors[..., :c.n_weights], vectors[..., c.n_weights:]
        x = torch.cat([self.fourier(vectors.device).expand(s, n, -1, -1), self.positional(latents)], -1)
        x = x.reshape(s * n, c.patch * c.patch, c.in_dim)
        dims, start = c.dims, 0
        for i, size in enumerate(c.layer_sizes):
            w = (h[..., start:start + size] @ self.A[i]).reshape(s * n, size)
            start += size
            bias, weight = w[:, None, :dims[i + 1]], w[:, dims[i + 1]:].reshape(s * n, dims[i], dims[i + 1])
            x = torch.baddbmm(bias, x, weight)
            if i < len(c.layer_sizes) - 1:
                x = torch.sin(c.w0 * x)
        return x.reshape(s, n, c.patch * c.patch, c.out_dim) + 0.5

    def init_vectors(self, n: int, generator: torch.Generator) -> Tensor:
        """SIREN-style starting vectors for n patches (prior training's first posterior means)."""
        c, parts = self.config, []
        for i, size in enumerate(c.layer_sizes):
            fan_in = c.dims[i]
            bound = 1.0 / fan_in if i == 0 else math.sqrt(6.0 / fan_in) / c.w0
            parts.append((torch.rand(n, size, generator=generator) * 2 - 1) * bound)
        parts.append(torch.randn(n, c.n_latent, generator=generator) * 0.1)
        return torch.cat(parts, -1)

    # ------------------------------------------------------------------ files
    def tensors(self) -> dict[str, Tensor]:
        """What the file stores: A in float16 (the decoder widens it back), the rest in float32."""
        out = {"loc": self.loc.detach().float(), "scale": self.scale.detach().float(),
               "kl_bits": self.kl_bits.detach().float()}
        for i, a in enumerate(self.A):
            out[f"A.{i}"] = a.detach().half()
        for k, v in self.upsampler.state_dict().items():
            out[f"upsampler.{k}"] = v.detach().float()
        return {k: v.cpu().contiguous() for k, v in out.items()}

    def fingerprint(self) -> str:
        """A content hash (config + every stored tensor, in a fixed order); files name their prior by it."""
        digest = hashlib.sha256(json.dumps(self.config.to_dict(), sort_keys=True).encode())
        for name, t in sorted(self.tensors().items()):
            digest.update(name.encode())
            digest.update(t.numpy().tobytes())
        return digest.hexdigest()[:16]

    def round_to_stored(self) -> Prior:
        """Make the in-memory prior equal to what its file holds (A through float16)."""
        with torch.no_grad():
            for a in self.A:
                a.copy_(a.half().float())
        return self

    def save(self, path: str | Path, meta: dict[str, Any]) -> int:
        """Write the prior as safetensors (metadata: config, hash, how it was trained); atomic."""
        from safetensors.torch import save

        from fieldpress.io import atomic_write_bytes

        self.round_to_stored()
        metadata = {"config": json.dumps(self.config.to_dict()), "fingerprint": self.fingerprint(),
                    "training": json.dumps(meta)}
        data = save(self.tensors(), metadata=metadata)
        atomic_write_bytes(Path(path), data)
        return len(data)


def load_prior(path: str | Path | None = None) -> Prior:
    """Read a prior file (default: the one shipped with fieldpress); InputError/FormatError, one line."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path) if path is not None else DEFAULT_PRIOR
    if not path.is_file():
        raise InputError(f"{path}: no such prior file (train one with python -m "
                         "fieldpress.fields.recombiner.train_prior)")
    data = path.read_bytes()
    if len(data) > MAX_PRIOR_BYTES:
        raise FormatError(f"{path}: prior file over {MAX_PRIOR_BYTES >> 20} MiB")
    try:
        tensors = load(data)
        header_len = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8:8 + header_len]).get("__metadata__") or {}
        config = NetConfig.from_dict(json.loads(metadata["config"]))
        training = json.loads(metadata.get("training", "{}"))
    except (SafetensorError, ValueError, KeyError, TypeError, UnicodeDecodeError, AttributeError) as exc:
        raise FormatError(f"{path}: not a RECOMBINER prior ({type(exc).__name__})") from None
    prior = Prior(config)
    _fill(prior, tensors, path)
    prior.meta = training if isinstance(training, dict) else {}
    return prior.eval()


def _fill(prior: Prior, tensors: dict[str, Tensor], path: Path) -> None:
    """Copy the stored tensors into ``prior``, refusing any missing, extra or misshapen one."""
    expected = {k: (tuple(v.shape), v.dtype) for k, v in prior.tensors().items()}
    got = {k: (tuple(v.shape), v.dtype) for k, v in tensors.items()}
    if got != expected:
        bad = sorted(set(got) ^ set(expected)) or [k for k in expected if got[k] != expected[k]]
        raise FormatError(f"{path}: prior tensors do not fit its config (first mismatch: {bad[0]})")
    finite = all(bool(torch.isfinite(t.float()).all()) for t in tensors.values())
    if not finite or not bool((tensors["scale"] > 0).all()):
        raise FormatError(f"{path}: prior holds non-finite values or non-positive scales")
    with torch.no_grad():
        prior.loc.copy_(tensors["loc"])
        prior.scale.copy_(tensors["scale"])
        prior.kl_bits.copy_(tensors["kl_bits"])
        for i, a in enumerate(prior.A):
            a.copy_(tensors[f"A.{i}"].float())
        prior.upsampler.load_state_dict({k[len("upsampler."):]: v for k, v in tensors.items()
                                         if k.startswith("upsampler.")})
