"""Side information of video models: a toy model declaring two side-information tensors with different
chunking (and quantization axes) round-trips through a .fpv with random access; the codec knows no model;
a codec-version-1 HNeRV file rewritten in the version-2 layout decodes to the same bytes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fieldpress.codec.container import open_container
from fieldpress.codec.registry import encode_file, get_codec
from fieldpress.video.codec import (
    VIDEO_CODEC,
    StoredSide,
    VideoDecoder,
    open_video,
    quantize_side,
    read_side_info,
)
from fieldpress.video.models import MODELS, ModelRecipe
from fieldpress.video.models.base import SideInfo, SideView, VideoINR, VideoModelConfig, frame_time
from tests.helpers.reads import record_reads

GOLDEN_V1 = Path(__file__).resolve().parent / "golden" / "codecs" / "v1"


@dataclass(frozen=True)
class ToyConfig(VideoModelConfig):
    pass


class Toy(VideoINR):
    """Frame i = sigmoid(upsampled grid[i] * gain[:, i] + bias): 'grid' (frames, 3, 2, 2) is chunked by
    4 frames with one scale; 'gain' (3, frames) is chunked by 3 frames along axis 1 with a scale per
    row (axis 0)."""

    name = "toy"

    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.config = config
        self.bias = nn.Parameter(torch.linspace(-0.5, 0.5, 3).reshape(1, 3, 1, 1))
        gen = torch.Generator().manual_seed(5)
        self.grid = torch.randn(config.frames, 3, 2, 2, generator=gen)
        self.gain = torch.rand(3, config.frames, generator=gen) * torch.tensor([[1.0], [10.0], [100.0]])

    def side_info(self, source: object, device: torch.device, bits: int) -> dict[str, SideInfo]:
        return {"grid": SideInfo(self.grid, bits, chunk=4),
                "gain": SideInfo(self.gain, 10, chunk=3, chunk_axis=1, axis=0)}

    def decode_inputs(self, index: int) -> dict[str, torch.Tensor]:
        return {"grid": self.side_views["grid"].entry(index)[None],
                "gain": self.side_views["gain"].entry(index)[None]}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if "grid" not in batch:
            batch = {**batch, **{k: torch.cat(v) for k, v in _stacked(self, batch["index"]).items()}}
        _ = frame_time(batch["index"], self.config.frames)
        up = nn.functional.interpolate(batch["grid"], size=(self.config.height, self.config.width))
        return torch.sigmoid(up * batch["gain"][:, :, None, None] + self.bias)


def _stacked(model: Toy, index: torch.Tensor) -> dict[str, list[torch.Tensor]]:
    out: dict[str, list[torch.Tensor]] = {"grid": [], "gain": []}
    for i in index:
        for k, v in model.decode_inputs(int(i)).items():
            out[k].append(v)
    return out


FRAMES = 10


@pytest.fixture()
def toy_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Toy, dict[str, StoredSide]]:
    recipe = ModelRecipe(Toy, ToyConfig, lambda base, w: ToyConfig(**base), 1.0, 1e-3, (0.9, 0.999), 0.0,
                         "l2", 1)
    monkeypatch.setitem(MODELS, "toy", recipe)
    model = Toy(ToyConfig(height=8, width=8, frames=FRAMES, strides=(2,)))
    side = {name: quantize_side(info) for name, info in model.side_info(None, torch.device("cpu"), 6).items()}
    from fieldpress.codec.quant import compress_state_dict

    streams, meta = compress_state_dict(model.stored_state(), bits=8)
    encoded = VIDEO_CODEC.encode(model, streams, meta, fps=10.0, frame_start=0, source={}, side=side)
    path = tmp_path / "toy.fpv"
    path.write_bytes(encode_file(get_codec("video", "nerv"), encoded))  # any video codec stamps the header
    return path, model, side


def test_each_side_tensor_is_stored_in_its_own_chunks(toy_file) -> None:  # noqa: ANN001
    path, _, _ = toy_file
    container = open_container(path)
    names = set(container.names)
    assert {f"grid/{i:06d}" for i in range(3)} <= names and "grid/000003" not in names   # 10 frames / 4
    assert {f"gain/{i:06d}" for i in range(4)} <= names and "gain/000004" not in names   # 10 frames / 3
    assert container.array("grid/000002").shape == (2, 3, 2, 2)
    assert container.array("gain/000003").shape == (3, 1)
    meta = container.header["side_info"]
    assert meta["grid"]["chunk"] == 4 and meta["grid"]["axis"] is None
    assert meta["gain"]["chunk"] == 3 and meta["gain"]["chunk_axis"] == 1 and meta["gain"]["axis"] == 0


def test_random_access_reads_only_the_touched_chunks(toy_file) -> None:  # noqa: ANN001
    path, _, side = toy_file
    container = open_container(path)
    read = record_reads(container)
    views, prefixes = read_side_info(container)
    assert sorted(prefixes) == ["gain/", "grid/"]
    read.clear()
    grid, gain = side["grid"].q.dequantize(), side["gain"].q.dequantize()
    for i in (9, 5, 4):
        assert torch.equal(views["grid"].entry(i), grid[i])
        assert torch.equal(views["gain"].entry(i), gain[:, i])
    assert read == ["grid/000002", "gain/000003", "grid/000001", "gain/000001"]


def test_the_decoder_feeds_the_model_its_side_information(toy_file) -> None:  # noqa: ANN001
    path, model, side = toy_file
    decoder = VideoDecoder(open_container(path))
    views: dict[str, SideView] = read_side_info(open_container(path))[0]
    model.attach_side_info(views)
    with torch.no_grad():
        expected = model({"index": torch.arange(FRAMES)})
    full = decoder.decode()
    assert full.shape == (FRAMES, 8, 8, 3)
    assert np.array_equal(decoder.decode(6, 8), full[6:8])
    expected_u8 = (expected.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(full, expected_u8)


def test_the_video_codec_names_no_model() -> None:
    import fieldpress.video.codec as codec
    import fieldpress.video.pipeline as pipeline

    for module in (codec, pipeline):
        text = Path(module.__file__).read_text()
        assert "isinstance(model, HNeRV)" not in text and 'hasattr(model, "encoder")' not in text
        assert "import HNeRV" not in text


def test_a_version_1_file_rewritten_as_version_2_decodes_to_the_same_bytes(tmp_path: Path) -> None:
    """The v1 embedding layout (header 'embed', streams e/000000...) and v2's chunked QTensor streams hold
    the same symbols, scale and zero point: the frames are the same bytes."""
    v1 = open_container(GOLDEN_V1 / "hnerv.fpv")
    assert "codec" not in v1.header and "embed" in v1.header
    decoder = VideoDecoder(v1)
    views, prefixes = read_side_info(v1)
    meta = v1.header["embed"]
    symbols = np.concatenate([v1.array(f"e/{i:06d}") for i in range(-(-meta["shape"][0] // meta["chunk"]))])
    from fieldpress.codec.qtensor import from_parts

    q = from_parts(symbols, np.array([meta["scale"]]), np.array([meta["zero_point"]]), bits=meta["bits"],
                   axis=None, shape=tuple(meta["shape"]))
    weights = {n: v1.array(n) for n in v1.names if not n.startswith(prefixes)}
    h = v1.header
    encoded = VIDEO_CODEC.encode(decoder.model, weights, h["weights"], fps=h["fps"],
                                 frame_start=h["frame_start"], source=h["source"],
                                 side={"embedding": StoredSide(q, meta["chunk"])},
                                 extra={"fit": h["fit"]})
    v2 = tmp_path / "hnerv-v2.fpv"
    v2.write_bytes(encode_file(get_codec("video", "hnerv"), encoded))
    assert open_container(v2).header["codec_version"] == 2
    expected = json.loads((GOLDEN_V1 / "expected.json").read_text())["hnerv.fpv"]["sha256"]
    assert hashlib.sha256(open_video(v2).decode().tobytes()).hexdigest() == expected
    assert views["embedding"].entry(1).shape == tuple(meta["shape"][1:])
