"""``fit-video --preset``: named bundles of defaults; any explicit flag overrides them.

- ``preview`` (the CPU default): the latent-grid codec (``--model latent``) at the clip's own
  resolution with a CPU-time cap: a CIF clip (carphone, 176x144, 120 frames) gets 8 CPU-minutes
  (smaller clips proportionally less, at least a minute; bigger ones never more). It replaced HNeRV
  as the default once it won at that budget: carphone 30.22 dB at 0.160 bpp and 31.00 at 0.295
  (quality 4 / 6) against HNeRV's 30.50 dB at 0.269; with its key frame since, 30.76 dB at 0.176 and
  31.52 at 0.266; with a latent frame every 2nd frame and a shorter key-frame phase, 31.85 dB at 0.182
  and 32.75 at 0.298; with Adam's second moments decaying at 0.95, 32.28 dB at 0.146 and 33.29 at 0.256
  (bench/results/video_rd_carphone.json, key ``latent``); the sample 28.39 dB at 0.417
  bpp (quality 6, 3.1 CPU-minutes) against HNeRV's 27.9 dB at 0.73 (README). With ``--model hnerv``
  (or nerv, nervpp) the preset still gives that model CAM in every block, 6-bit weights and the
  downscale of frames wider than ``max_width``, as ``hnerv-preview`` does.
- ``hnerv-preview``: the HNeRV preview (the CPU default before the latent codec): a small HNeRV with
  CAM in its blocks under the same time cap, the whole schedule scaled into it. CAM gave +0.35 dB on
  carphone and +2.2 dB on the sample at equal time; 6-bit weights beat a smaller 8-bit model at
  equal bytes by +0.57 dB (sample) and +0.73 dB (carphone) (README).
- ``default`` (the GPU default): HNeRV 0.75M, 300 epochs, 8-bit weights, 6-bit embeddings.
- ``paper``: HNeRV's bunny setting: 1.5M, 300 epochs, batch 2, lr 1e-3, L2, 10% warmup + cosine.
- ``hinerv-preview`` (CPU) and ``hinerv-paper`` (a CUDA GPU, bf16): HiNeRV (``--model hinerv``) at the
  clip's own resolution; see the comment on them below.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from fieldpress.errors import InputError


@dataclass(frozen=True)
class Preset:
    model: str
    size: int
    epochs: int
    minutes: float | None
    prune: float = 0.0
    qat_epochs: int = 0
    max_width: int | None = None      # weight models: downscale wider inputs unless --resize/--crop
    reference_pixels: int | None = None   # `minutes` is for a clip of this many pixels (frames x W x H)
    cam: bool = False                     # coordinate-aware modulation in every decoder block
    bits: int = 8                         # weight bits (per channel)
    precision: str = "fp32"               # training precision unless --precision says otherwise

    def minutes_for(self, pixels: int) -> float | None:
        """The time cap for a clip: `minutes` scaled by its pixel count, at least a minute (a short,
        small clip gets a short preview; a bigger one never more than `minutes`)."""
        if self.minutes is None or self.reference_pixels is None:
            return self.minutes
        return max(1.0, min(self.minutes, self.minutes * pixels / self.reference_pixels))


_PREVIEW = Preset(model="latent", size=150_000, epochs=300, minutes=8.0, max_width=320,
                  reference_pixels=176 * 144 * 120, cam=True, bits=6)
PRESETS: dict[str, Preset] = {
    "preview": _PREVIEW,
    "hnerv-preview": replace(_PREVIEW, model="hnerv"),  # the CPU default before the latent codec
    "default": Preset(model="hnerv", size=750_000, epochs=300, minutes=None),
    "paper": Preset(model="hnerv", size=1_500_000, epochs=300, minutes=None),
    # HiNeRV: the CPU preview is the HNeRV preview's budget and bits; the GPU size follows the UVG
    # configs (HiNeRV-S 3.2M params for 1080p x 600 frames) scaled to a 3M model, bf16, 300 epochs,
    # 15% pruning, then 30 epochs of 8-bit QAT (the released recipe's prune and quant stages)
    "hinerv-preview": Preset(model="hinerv", size=150_000, epochs=300, minutes=8.0, max_width=None,
                             reference_pixels=176 * 144 * 120, cam=False, bits=6),
    "hinerv-paper": Preset(model="hinerv", size=3_000_000, epochs=300, minutes=None, prune=0.15,
                           qat_epochs=30, precision="bf16"),
}


def preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}") from None
