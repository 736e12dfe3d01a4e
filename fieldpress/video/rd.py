"""Rate-distortion training and coding for the video INRs (NeRV, HNeRV, NeRV++, HiNeRV).

`RdVideoModel` wraps a `VideoINR` for the Fitter. Every stored float tensor of the INR (conv and linear
weights, biases, CAM grids) and every side-information tensor (HNeRV's per-frame embeddings) is held as
integers ``q = clamp(round(x / step), -QMAX, QMAX)`` with a learned step per tensor (log2, float32), and
gets a zero-mean Laplace entropy model (`fieldpress.codec.entropy_models.FactorizedLaplace`: one scale
per output channel of a weight, one per embedding channel, one for the rest). Before the ``rd`` stage
the wrapper is the plain INR; at the first ``rd`` step it sets each step from ``--bits`` /
``--embed-bits`` (absmax / (2**(bits-1) - 1)) and each Laplace scale from the data, then trains
through the quantization proxies (`fieldpress.codec.proxies`: soft-round + noise annealed to
straight-through). ``rate_bits(info)`` is the rate in bits per pixel of the clip (bits / (T x H x W)):
lambda weighs bpp against the model's own loss (HNeRV: MSE on [0, 1] pixels).

The file codes exactly those integers with the range coder under the integer tables of the same
Laplace models (`encode_rd`), so the coded payload is what the rate model counted (the fit reports
both). Weights go in one range-coded stream; side information is coded per chunk of frames, so
decoding frames S:E still reads only the chunks it touches. docs/formats/video.md (codec version 3).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from fieldpress.codec import entropy_models, proxies
from fieldpress.codec.entropy_models import N_TABLES, FactorizedLaplace, laplace_bits, param_indices, to_fixed
from fieldpress.errors import FormatError, InputError
from fieldpress.video.models.base import VideoINR

QMAX = 127  # integers lie in [-QMAX, QMAX]: inside the range coder's residual alphabet
LAYOUT = "laplace"  # the "coder" value of RD weight and side-information meta
MAX_RD_VALUES = 1 << 28  # side-information values a header may declare


def weight_channels(name: str, shape: tuple[int, ...]) -> int:
    """Laplace scales of a stored tensor: one per output channel of a weight, one for anything else."""
    return int(shape[0]) if len(shape) >= 2 and name.endswith("weight") else 1


def _ints(x: Tensor, log_step: Tensor, state: proxies.ProxyState | None) -> Tensor:
    """x in integer units of 2**log_step, clamped, relaxed by the proxy (hard-rounded when None)."""
    scaled = (x / torch.exp2(log_step)).clamp(-QMAX, QMAX)
    return torch.round(scaled) if state is None else proxies.apply(scaled, state)


def _channels_first(x: Tensor, axis: int) -> Tensor:
    return x.movedim(axis, 0)


@dataclass
class _StepCache:
    """The integers the current step's forward used, so the rate sees the very same values."""

    step: int
    weights: dict[str, Tensor]
    side: dict[str, Tensor]
    batch: int


class RdVideoModel(nn.Module):
    """A `VideoINR` with a learned quantization step and a Laplace rate model per stored tensor (module
    docstring). ``forward(batch, info=None)``: plain before the rd stage begins, proxy-quantized in it,
    hard-quantized (what the file decodes to) in evaluation."""

    def __init__(self, inr: VideoINR, pixels: int, bits: int, embed_bits: int) -> None:
        super().__init__()
        self.inr = inr
        self.pixels = int(pixels)
        self.bits, self.embed_bits = int(bits), int(embed_bits)
        self.unstored_prefixes = tuple(f"inr.{p}" for p in inr.unstored_prefixes)
        state = inr.stored_state()
        self.names = [k for k, v in state.items() if v.is_floating_point()]
        self.log_steps = nn.Parameter(torch.zeros(len(self.names)))
        self.rates = nn.ModuleList(FactorizedLaplace(weight_channels(k, tuple(state[k].shape)))
                                   for k in self.names)
        self.side_names = sorted(inr.side_channels())
        self.side_log_steps = nn.Parameter(torch.zeros(len(self.side_names)))
        self.side_rates = nn.ModuleList(FactorizedLaplace(inr.side_channels()[n]) for n in self.side_names)
        self.register_buffer("ready", torch.zeros(()))  # 1 once the rd stage has set the steps
        self._cache: _StepCache | None = None

    # ------------------------------------------------------------------ setup
    @torch.no_grad()
    def _begin(self, side: Mapping[str, Tensor]) -> None:
        """Steps from --bits / --embed-bits and Laplace scales from the values (the rd stage's start)."""
        params = dict(self.inr.named_parameters())
        for i, name in enumerate(self.names):
            self.log_steps[i] = _initial_log_step(params[name], self.bits)
            _fit_scales(self.rates[i], _ints(params[name], self.log_steps[i], None), self.log_steps[i])
        for i, name in enumerate(self.side_names):
            self.side_log_steps[i] = _initial_log_step(side[name], self.embed_bits)
            ints = _ints(side[name], self.side_log_steps[i], None)
            _fit_scales(self.side_rates[i], _channels_first(ints, 1), self.side_log_steps[i])
        self.ready.fill_(1.0)

    @property
    def quantizing(self) -> bool:
        return bool(self.ready.item() > 0)

    # ------------------------------------------------------------------ forward and rate
    def forward(self, batch: dict[str, Tensor], info: Any = None) -> Tensor:
        in_rd = info is not None and getattr(info, "kind", None) == "rd"
        if not in_rd and not self.quantizing:  # the fit and prune stages: the plain INR
            return self.inr(batch)
        side = self.inr.fit_side(batch) if self.side_names else {}
        if in_rd and not self.quantizing:
            self._begin(side)
        state = proxies.schedule(info.progress) if in_rd else None
        params = dict(self.inr.named_parameters())
        w_ints = {n: _ints(params[n], self.log_steps[i], state) for i, n in enumerate(self.names)}
        s_ints = {n: _ints(side[n], self.side_log_steps[i], state) for i, n in enumerate(self.side_names)
                  if n in side}
        if in_rd and self.training:
            self._cache = _StepCache(int(info.global_step), w_ints, s_ints, int(batch["index"].numel()))
        weights = {n: q * torch.exp2(self.log_steps[i]) for i, (n, q) in enumerate(w_ints.items())}
        extra = {self.inr.side_batch_key(n): s_ints[n] * torch.exp2(self.side_log_steps[i])
                 for i, n in enumerate(self.side_names) if n in s_ints}
        return functional_call(self.inr, weights, ({**batch, **extra},))

    def rate_bits(self, info: Any) -> Tensor:
        """Bits per pixel of the clip under the rate models: every weight, plus the side information of
        this step's frames scaled to the whole clip (an unbiased estimate of its share)."""
        c = self._cache
        if c is None or c.step != int(info.global_step):
            raise RuntimeError("rate_bits(info) needs this step's forward first")
        total = sum((_bits(self.rates[i], self.log_steps[i], c.weights[n]) for i, n in enumerate(self.names)),
                    torch.zeros(()))
        frames = self.inr.config.frames
        for i, n in enumerate(self.side_names):
            if n in c.side:
                bits = _bits(self.side_rates[i], self.side_log_steps[i], _channels_first(c.side[n], 1))
                total = total + bits * (frames / c.batch)
        return total / self.pixels

    # ------------------------------------------------------------------ what the file holds
    @torch.no_grad()
    def quantized_weights(self) -> dict[str, np.ndarray]:
        """The integer weights (int64) the file stores, by state-dict name."""
        params = dict(self.inr.named_parameters())
        return {n: _ints(params[n], self.log_steps[i], None).to(torch.int64).cpu().numpy()
                for i, n in enumerate(self.names)}

    @torch.no_grad()
    def quantized_side(self, source: Any, device: torch.device) -> dict[str, np.ndarray]:
        """The integer side information of every frame (int64, frames first), one frame at a time."""
        out: dict[str, list[np.ndarray]] = {n: [] for n in self.side_names}
        for f in range(len(source)):
            batch = {k: v.to(device) for k, v in source.batch(torch.tensor([f])).items()}
            side = self.inr.fit_side(batch)
            for i, n in enumerate(self.side_names):
                out[n].append(_ints(side[n], self.side_log_steps[i], None).to(torch.int64).cpu().numpy())
        return {n: np.concatenate(v) for n, v in out.items()}

    def steps(self) -> dict[str, float]:
        """The float32 step of every weight tensor (what the header stores)."""
        return {n: float(torch.exp2(self.log_steps[i].detach().float()).item())
                for i, n in enumerate(self.names)}

    def side_steps(self) -> dict[str, float]:
        return {n: float(torch.exp2(self.side_log_steps[i].detach().float()).item())
                for i, n in enumerate(self.side_names)}

    @torch.no_grad()
    def model_bits(self, weights: Mapping[str, np.ndarray], side: Mapping[str, np.ndarray]) -> float:
        """The rate model's bits (continuous Laplace) for these integers: what training counted."""
        total = 0.0
        for i, n in enumerate(self.names):
            total += float(_bits(self.rates[i], self.log_steps[i], torch.from_numpy(weights[n]).float()))
        for i, n in enumerate(self.side_names):
            x = _channels_first(torch.from_numpy(side[n]).float(), 1)
            total += float(_bits(self.side_rates[i], self.side_log_steps[i], x))
        return total


def _initial_log_step(x: Tensor, bits: int) -> Tensor:
    absmax = float(x.detach().abs().max()) if x.numel() else 0.0
    levels = 2 ** (max(2, bits) - 1) - 1
    return torch.tensor(math.log2(max(absmax / levels, 1e-8)))


def _fit_scales(model: FactorizedLaplace, ints: Tensor, log_step: Tensor) -> None:
    """Set each channel's Laplace scale to the mean |value| of its channel (the Laplace ML estimate),
    kept in value units (see `_int_log_scale`)."""
    flat = ints.reshape(model.log_scale.numel(), -1).abs().float()
    model.log_scale.copy_(flat.mean(dim=1).clamp_min(0.05).log() + log_step * math.log(2.0))


def _int_log_scale(model: FactorizedLaplace, log_step: Tensor) -> Tensor:
    """The per-channel Laplace log-scale in integer units. The learned scale is in value units, so a
    step that grows during training shrinks the integers' scale with it (no lag between the two)."""
    return model.log_scale - log_step * math.log(2.0)


def _bits(model: FactorizedLaplace, log_step: Tensor, ints: Tensor) -> Tensor:
    """Differentiable bits of integers `ints` (channels on axis 0) under the Laplace model."""
    ls = _int_log_scale(model, log_step).view(-1, *([1] * (ints.dim() - 1))).expand_as(ints)
    return laplace_bits(ints, torch.zeros_like(ints), ls).sum()


def _table_rows(model: FactorizedLaplace, log_step: Tensor) -> np.ndarray:
    """The integer table row of each channel (what the file stores and the range coder uses)."""
    ls = _int_log_scale(model, log_step).detach().float()
    return param_indices(np.zeros(ls.numel(), np.int64), to_fixed(ls))[1]


RD_PARAM_LR = 0.03
"""Learning rate of the steps (log2 units) and Laplace scales (ln units): they must move by whole units
within a short rd stage, whatever the model's own learning rate."""


def rd_param_groups(model: nn.Module, lr: float) -> list[dict]:
    """Optimizer groups: the steps and Laplace scales of an `RdVideoModel` at `RD_PARAM_LR` (scaled
    with the stage's lr, so the rd stage's schedule applies), CAM grids at CAM's 10x, the rest at ``lr``."""
    from fieldpress.fields.cam import cam_param_groups

    rd_ids: set[int] = set()
    if isinstance(model, RdVideoModel):
        rd_params = [model.log_steps, model.side_log_steps, *model.rates.parameters(),
                     *model.side_rates.parameters()]
        rd_ids = {id(p) for p in rd_params}
    groups = []
    for g in cam_param_groups(model, lr):
        kept = [p for p in g["params"] if id(p) not in rd_ids]
        if kept:
            groups.append({**g, "params": kept})
    if rd_ids:
        groups.append({"params": [p for p in model.parameters() if id(p) in rd_ids], "lr": RD_PARAM_LR})
    return groups


def rd_loss(name: str) -> Any:
    """The model's loss (by name) for a fit through `RdVideoModel`: the step's `StepInfo` goes to the
    model, which picks its quantization proxy from it; reports PSNR."""
    from torch.nn import functional as F  # noqa: N812

    from fieldpress.video.data import LOSSES, to_unit

    criterion = LOSSES[name]

    def loss_fn(model: nn.Module, batch: dict[str, Tensor], info: Any) -> tuple[Tensor, dict]:
        target = to_unit(batch["frames"])
        pred = model(batch, info)
        loss = criterion(pred, target)
        with torch.no_grad():
            psnr = -10.0 * torch.log10(F.mse_loss(pred.detach().float(), target).clamp_min(1e-10))
        return loss, {"psnr": psnr}

    return loss_fn


# ----------------------------------------------------------------------------- coding
@dataclass(frozen=True)
class RdCoded:
    """What `encode_rd` produced: streams, the header meta of the weights and of each side tensor, and
    the payload bits (range-coded words) of each part."""

    streams: dict[str, np.ndarray]
    weights_meta: dict[str, Any]
    side_meta: dict[str, dict[str, Any]]
    payload_bits: dict[str, int]


def encode_rd(model: RdVideoModel, weights: Mapping[str, np.ndarray], side: Mapping[str, np.ndarray],
              chunk: int) -> RdCoded:
    """Range-code the integer weights (one stream ``w/words``, the table rows in ``w/rows``) and each
    side tensor per chunk of `chunk` frames (``NAME/000000`` ..., rows in ``NAME/rows``)."""
    enc = entropy_models.new_encoder()
    rows = []
    for i, n in enumerate(model.names):
        r = _table_rows(model.rates[i], model.log_steps[i])
        q = np.asarray(weights[n])
        entropy_models.encode_symbols(enc, q, np.zeros(q.shape, np.int64),
                                      FactorizedLaplace.rows_for(q.shape, r))
        rows.append(r)
    steps = model.steps()
    streams = {"w/words": entropy_models.finish(enc),
               "w/rows": np.concatenate(rows).astype(np.int16)}
    bits = {"weights": int(streams["w/words"].size) * 32}
    wmeta = {"coder": LAYOUT, "qmax": QMAX,
             "tensors": [[n, list(weights[n].shape), steps[n]] for n in model.names]}
    smeta: dict[str, dict[str, Any]] = {}
    for i, n in enumerate(model.side_names):
        q = np.asarray(side[n])
        srows = _table_rows(model.side_rates[i], model.side_log_steps[i])
        streams[f"{n}/rows"] = srows.astype(np.int16)
        bits[n] = 0
        for c in range(math.ceil(q.shape[0] / chunk)):
            part = np.moveaxis(q[c * chunk:(c + 1) * chunk], 1, 0)
            e = entropy_models.new_encoder()
            entropy_models.encode_symbols(e, part, np.zeros(part.shape, np.int64),
                                          FactorizedLaplace.rows_for(part.shape, srows))
            streams[f"{n}/{c:06d}"] = entropy_models.finish(e)
            bits[n] += int(streams[f"{n}/{c:06d}"].size) * 32
        smeta[n] = {"coder": LAYOUT, "qmax": QMAX, "shape": list(q.shape), "step": model.side_steps()[n],
                    "chunk": int(chunk), "chunk_axis": 0, "channel_axis": 1}
    return RdCoded(streams, wmeta, smeta, bits)


def is_rd_meta(meta: Any) -> bool:
    """Whether a weights or side-information meta entry is in the RD layout (codec version 3)."""
    return isinstance(meta, dict) and meta.get("coder") == LAYOUT


def _step(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 < value < 1e30:
        raise FormatError(f"bad quantization step {value!r} in the header")
    return float(value)


def _rows(container: Any, name: str, count: int) -> np.ndarray:
    if name not in container:
        raise FormatError(f"stream {name} is missing")
    rows = np.asarray(container.array(name)).astype(np.int64).reshape(-1)
    if rows.size != count or (rows.size and (rows.min() < 0 or rows.max() >= N_TABLES)):
        raise FormatError(f"stream {name} does not match the model's channels")
    return rows


def decode_rd_weights(container: Any, meta: Mapping[str, Any],
                      expected: Mapping[str, tuple[int, ...]]) -> dict[str, Tensor]:
    """The float32 weights of an RD file, checked against the model's `expected` shapes before any
    decoding (FormatError on any mismatch or damage)."""
    try:
        entries = [(str(n), tuple(int(d) for d in shape), _step(step)) for n, shape, step in meta["tensors"]]
    except (KeyError, TypeError, ValueError):
        raise FormatError("malformed RD weights meta in the header") from None
    if {n: s for n, s, _ in entries} != dict(expected) or len(entries) != len(expected):
        raise FormatError("the RD weights in the header do not match the model's stored tensors")
    counts = [weight_channels(n, s) for n, s, _ in entries]
    rows = _rows(container, "w/rows", sum(counts))
    if "w/words" not in container:
        raise FormatError("stream w/words is missing")
    dec = entropy_models.new_decoder(np.asarray(container.array("w/words")).reshape(-1))
    out, at = {}, 0
    for (name, shape, step), k in zip(entries, counts):
        q = FactorizedLaplace.decode(dec, shape, rows[at:at + k])
        at += k
        out[name] = torch.from_numpy(q).float() * torch.tensor(step, dtype=torch.float32)
    return out


class RdChunkedView:
    """A `SideView` over an RD side-information tensor read chunk by chunk from a container."""

    def __init__(self, container: Any, name: str, meta: Mapping[str, Any], channels: int) -> None:
        try:
            self.shape = tuple(int(d) for d in meta["shape"])
            self.chunk, self.step = int(meta["chunk"]), _step(meta["step"])
            ok = int(meta.get("chunk_axis", 0)) == 0 and int(meta.get("channel_axis", 1)) == 1
        except (KeyError, TypeError, ValueError):
            raise FormatError(f"malformed RD side-information meta for {name!r}") from None
        if not ok or len(self.shape) < 2 or self.shape[1] != channels or self.chunk < 1 \
                or math.prod(self.shape) > MAX_RD_VALUES or min(self.shape) < 1:
            raise FormatError(f"RD side information {name!r} does not match the model")
        self.container, self.name = container, name
        self.rows = _rows(container, f"{name}/rows", channels)
        self._cache: dict[int, Tensor] = {}

    def _load(self, c: int) -> Tensor:
        stream = f"{self.name}/{c:06d}"
        if stream not in self.container:
            raise FormatError(f"side-information stream {stream} is missing")
        n = min(self.chunk, self.shape[0] - c * self.chunk)
        shape = (self.shape[1], n, *self.shape[2:])
        dec = entropy_models.new_decoder(np.asarray(self.container.array(stream)).reshape(-1))
        q = entropy_models.decode_symbols(dec, np.zeros(shape, np.int64),
                                          FactorizedLaplace.rows_for(shape, self.rows))
        step = torch.tensor(self.step, dtype=torch.float32)
        return torch.from_numpy(np.moveaxis(q, 0, 1).copy()).float() * step

    def check(self) -> None:
        """Decode every chunk once (deep validation)."""
        for c in range(math.ceil(self.shape[0] / self.chunk)):
            self._load(c)

    def entry(self, index: int) -> Tensor:
        if not 0 <= index < self.shape[0]:
            raise InputError(f"side information has no entry {index}")
        c = index // self.chunk
        if c not in self._cache:
            self._cache = {c: self._load(c)}
        return self._cache[c][index - c * self.chunk]


__all__ = ["QMAX", "RdChunkedView", "RdCoded", "RdVideoModel", "decode_rd_weights", "encode_rd", "is_rd_meta",
           "rd_loss", "rd_param_groups", "weight_channels"]
