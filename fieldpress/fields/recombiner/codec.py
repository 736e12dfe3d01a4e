"""The heavy half of ``image/recombiner``: a file holds the REC indices (bit-packed at the block's bit
count, stream ``indices``), the seed, the prior's hash and the image layout; decoding regenerates every
block's sample from the seed and index under the prior and renders the patches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from fieldpress.codec.registry import Encoded
from fieldpress.errors import FormatError, InputError
from fieldpress.fields.image_io import RasterInfo
from fieldpress.fields.recombiner import rec
from fieldpress.fields.recombiner.config import MAX_BLOCK_BITS
from fieldpress.fields.recombiner.encode import Layout, reconstruct
from fieldpress.fields.recombiner.model import Prior, load_prior, shipped_prior

MAX_PIXELS = 1 << 24
STREAM = "indices"


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(H, W, 3) float in [0, 1] -> uint8 (round half up), the same on both sides."""
    return (image.clamp(0, 1).numpy() * 255.0 + 0.5).astype(np.uint8)


def header_for(info: RasterInfo, prior: Prior, seed: int, block_bits: int, n_blocks: int) -> dict[str, Any]:
    """The file header: the layout, the prior's hash, the seed and the block count and size."""
    return {"image": info.to_dict(), "prior": prior.fingerprint(), "seed": int(seed),
            "block_bits": int(block_bits), "blocks": int(n_blocks)}


def encoded(info: RasterInfo, prior: Prior, seed: int, block_bits: int, indices: np.ndarray) -> Encoded:
    """Header + the packed index stream (stored raw: the indices are uniform, so nothing compresses them)."""
    return Encoded(header_for(info, prior, seed, block_bits, len(indices)),
                   {STREAM: rec.pack_indices(indices, block_bits)}, {STREAM: "raw"})


def _fields(header: dict[str, Any]) -> tuple[RasterInfo, str, int, int, int]:
    try:
        info = RasterInfo.from_dict(dict(header["image"]))
        prior, seed = str(header["prior"]), int(header["seed"])
        bits, blocks = int(header["block_bits"]), int(header["blocks"])
    except (KeyError, TypeError, ValueError, InputError) as exc:
        raise FormatError(f"recombiner header: {type(exc).__name__} {exc}") from None
    if info.mode != "RGB" or info.bit_depth != 8 or info.width * info.height > MAX_PIXELS:
        raise FormatError("recombiner header: not an 8-bit RGB image of a supported size")
    if not (1 <= bits <= MAX_BLOCK_BITS and blocks >= 1 and 0 <= seed < 1 << 32):
        raise FormatError("recombiner header: block bits, block count or seed out of range")
    return info, prior, seed, bits, blocks


class RecombinerDecoder:
    """The decoder of an ``image/recombiner`` file: ``.info`` and ``.image(device)`` -> (H, W, 3) uint8.
    ``prior``: the prior file (default: the shipped prior the file names by its fingerprint); another
    prior than the file's is refused."""

    def __init__(self, container: Any, prior: str | Path | Prior | None = None) -> None:
        self.container = container
        self.info, self.prior_hash, self.seed, self.bits, self.blocks = _fields(dict(container.header))
        self._prior = prior

    def prior(self) -> Prior:
        """The prior to decode with; FormatError when it is not the one the file names."""
        source = self._prior
        if source is None:
            source = shipped_prior(self.prior_hash)
            if source is None:
                raise FormatError(f"this file was coded with prior {self.prior_hash}, which fieldpress "
                                  "does not ship (give that prior: --prior FILE)")
        prior = source if isinstance(source, Prior) else load_prior(source)
        if prior.fingerprint() != self.prior_hash:
            raise FormatError(f"this file was coded with prior {self.prior_hash}, not {prior.fingerprint()} "
                              "(give the prior it names: --prior FILE)")
        return prior

    def indices(self, layout: Layout, dims: int) -> np.ndarray:
        """The block indices, checked against the stream's byte count and the prior's dimensions."""
        if self.blocks > layout.n_patches * dims:
            raise FormatError(f"{self.blocks} blocks for {layout.n_patches * dims} dimensions")
        return rec.unpack_indices(self.container.array(STREAM), self.blocks, self.bits)

    def vectors(self) -> tuple[Prior, torch.Tensor, Layout]:
        """The prior, the (N, D) coded vectors and the layout (no rendering)."""
        prior = self.prior()
        layout = Layout(self.info.width, self.info.height, prior.config.patch)
        dims = prior.config.n_params
        indices = self.indices(layout, dims)
        spec = rec.make_blocks(prior.kl_bits.numpy(), layout.n_patches, self.blocks, self.seed)
        flat = rec.decode_blocks(indices, spec, prior.loc.detach().repeat(layout.n_patches),
                                 prior.scale.detach().repeat(layout.n_patches), self.seed, self.bits)
        return prior, flat.reshape(layout.n_patches, dims), layout

    def image(self, device: Any = "cpu") -> np.ndarray:
        """The decoded pixels (rendered on the CPU with one thread, as the encoder did)."""
        from fieldpress.runtime import torch_threads

        with torch_threads(1):
            prior, vectors, layout = self.vectors()
            return to_uint8(reconstruct(prior, vectors, layout))


class RecombinerCodec:
    """The heavy half of the ``image/recombiner`` codec (declared in its ``declaration`` module)."""

    def encode(self, fitted: Any) -> Encoded:
        """The header and streams of a finished fit (the pipeline's ``RecombinerFit``)."""
        return fitted.encode()

    def decode(self, container: Any, prior: str | Path | Prior | None = None) -> RecombinerDecoder:
        """The decoder of a container (``prior``: the prior file or object; default the shipped one)."""
        return RecombinerDecoder(container, prior)

    def verify(self, container: Any, prior: str | Path | Prior | None = None) -> None:
        """Deep validation: the header, the prior it names (``prior``: that file; default the shipped one),
        the index stream's size and every block's sample (nothing rendered)."""
        RecombinerDecoder(container, prior).vectors()


CODEC = RecombinerCodec()
