"""Golden files per codec: every file a released fieldpress wrote decodes to the same bytes forever.

tests/golden/codecs/<set>/ holds one tiny file per codec and `expected.json` with the SHA-256 of its
decoded output (tests/golden/make_codec_golden.py wrote them; set v1 with the last commit before the
codec registry, so it pins the previous release's files).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

GOLDEN = Path(__file__).resolve().parent / "golden"
CASES = sorted((d, name) for d in (GOLDEN / "codecs").iterdir() if d.is_dir()
               for name in json.loads((d / "expected.json").read_text()))


def _maker():
    spec = importlib.util.spec_from_file_location("make_codec_golden", GOLDEN / "make_codec_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("folder,name", CASES, ids=[f"{d.name}/{n}" for d, n in CASES])
@pytest.mark.parametrize("threads", [1, 2])
def test_golden_file_decodes_to_the_same_bytes(folder: Path, name: str, threads: int) -> None:
    import torch

    expected = json.loads((folder / "expected.json").read_text())[name]
    maker = _maker()
    decode = {".fpv": maker.decoded_video, ".fpi": maker.decoded_image, ".fpg": maker.decoded_scene}
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        decoded = decode[Path(name).suffix](folder / name)
    finally:
        torch.set_num_threads(before)
    assert maker.sha256(decoded) == expected["sha256"]
