"""Write the golden container of the current format version: tests/golden/v<N>.fpv (+ expected values).

Golden files are kept forever: every later fieldpress must read every one of them
(tests/test_container.py::test_golden_files_*). This script refuses to overwrite an existing golden
file; run it once when a new format version is introduced:

    python tests/golden/make_golden.py            # writes tests/golden/v1.fpv and v1.expected.json

All values come from integer formulas (no RNG, no libm), so they are exact on every machine.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
INT_BITS = {"uint8": 8, "uint16": 16, "uint32": 32, "uint64": 64, "int8": 8, "int16": 16, "int32": 32,
            "int64": 64}
SHAPES = {"scalar": (), "empty": (0,), "matrix": (3, 4), "cube": (2, 3, 5)}


def expected_stream(dtype: str, shape: tuple[int, ...], small: bool = False) -> np.ndarray:
    """The exact values of the golden stream of `dtype` and `shape` (small: alphabet of 11 symbols)."""
    n = int(np.prod(shape)) if shape else 1
    i = np.arange(n, dtype=np.uint64)
    if dtype == "bool":
        values = (i * np.uint64(7)) % np.uint64(3) == 0
    elif dtype in INT_BITS:
        bits = INT_BITS[dtype]
        if small:
            raw = (i * i) % np.uint64(11)
        else:
            raw = (i * np.uint64(2654435761) + np.uint64(12345)) & np.uint64((1 << bits) - 1)
        if dtype.startswith("int"):
            values = raw.astype(f"uint{bits}").view(dtype) if not small else raw.astype(dtype) - 5
        else:
            values = raw.astype(dtype)
    elif dtype == "bfloat16":
        values = ((i * np.uint64(40503)) & np.uint64(0xFFFF)).astype(np.uint16)  # the bits
    else:
        values = (((i * np.uint64(37)) % np.uint64(101)).astype(np.int64) - 50).astype(dtype) / np.asarray(
            64, dtype)
        specials = np.array([np.inf, -np.inf, -0.0, np.nan], dtype)
        values[: min(n, 4)] = specials[: min(n, 4)]
    return np.asarray(values).reshape(shape)


def golden_streams() -> tuple[dict[str, object], dict[str, str]]:
    """Every dtype x shape, raw and auto; small-alphabet integers forced to ANS; floats forced to zstd."""
    import torch

    streams: dict[str, object] = {}
    codecs: dict[str, str] = {}
    for dtype in ["bool", *INT_BITS, "float16", "float32", "float64", "bfloat16"]:
        for sname, shape in SHAPES.items():
            values = expected_stream(dtype, shape)
            value = values
            if dtype == "bfloat16":
                value = torch.from_numpy(values.view(np.int16)).view(torch.bfloat16)
            for codec in ("raw", "auto"):
                streams[f"{dtype}/{sname}/{codec}"] = value
                codecs[f"{dtype}/{sname}/{codec}"] = codec
            if dtype in INT_BITS or dtype == "bool":
                name = f"{dtype}/{sname}/ans"
                streams[name] = expected_stream(dtype, shape, small=True) if dtype != "bool" else values
                codecs[name] = "ans"
            elif dtype != "bfloat16":
                streams[f"{dtype}/{sname}/zstd"] = values
                codecs[f"{dtype}/{sname}/zstd"] = "zstd"
    return streams, codecs


def golden_state():
    """A small state dict (formula weights), its pruning masks, and its compressed streams + meta."""
    import torch

    from fieldpress.codec.quant import compress_state_dict

    def formula(*shape: int, mult: int) -> torch.Tensor:
        n = int(np.prod(shape))
        values = [((k * mult) % 97 - 48) / 32 for k in range(n)]
        return torch.tensor(values, dtype=torch.float32).reshape(shape)

    state = {"layer.weight": formula(6, 5, mult=31), "layer.bias": formula(6, mult=13),
             "conv.weight": formula(4, 2, 3, mult=17), "half": formula(7, mult=5).half(),
             "steps": torch.tensor(9)}
    masks = {"layer.weight": torch.tensor([(k % 3) != 0 for k in range(30)]).reshape(6, 5)}
    state["layer.weight"] = state["layer.weight"] * masks["layer.weight"]
    streams, meta = compress_state_dict(state, bits=5, masks=masks, bits_per_tensor={"conv.weight": 9},
                                        axes={"layer.weight": 0, "conv.weight": 1}, axis=None, prefix="s/")
    return state, masks, streams, meta


def main() -> int:
    from fieldpress.codec.container import FORMAT_VERSION, open_container, write_container
    from fieldpress.codec.quant import decompress_state_dict

    path = HERE / f"v{FORMAT_VERSION}.fpv"
    expected_path = HERE / f"v{FORMAT_VERSION}.expected.json"
    if (path.exists() or expected_path.exists()) and "--force" not in sys.argv:
        print(f"{path.name} exists: golden files are kept forever (use --force only before release)")
        return 1
    streams, codecs = golden_streams()
    _, _, state_streams, meta = golden_state()
    streams.update(state_streams)
    header = {"golden": FORMAT_VERSION, "note": "fieldpress golden file; see tests/golden/make_golden.py",
              "state": meta, "unicode": "é∑😀", "numbers": [0, -1, 1.5, 1e300, None, True]}
    size = write_container(path, "video", header, streams, codecs)
    decoded = decompress_state_dict(open_container(path), meta)
    expected = {name: {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape),
                       "values": [float(v).hex() for v in t.reshape(-1).double().tolist()]}
                for name, t in decoded.items()}
    expected_path.write_text(json.dumps({"state": expected}, indent=1, sort_keys=True) + "\n")
    print(f"wrote {path} ({size} bytes, {len(streams)} streams) and {expected_path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
