"""Write one tiny golden file per codec (video hnerv/nerv/nervpp, image field, scene lightgaussian) with
the SHA-256 of its decoded output, into tests/golden/codecs/.

Golden files are kept forever: every later fieldpress must decode each one to the same bytes
(tests/test_codec_golden.py). The v1 set was written with the last commit before [core2] (2a7d445), so
it pins files of the previous release. This script refuses to overwrite; run it with a new NAME when a
codec gets a new version:

    python tests/golden/make_codec_golden.py [--set v1] [--family video --family image ...]

``--family`` writes only that family's files (all three when not given), for a set made when one
family's codecs get a new version (e.g. ``--set v2-video --family video``).

Inputs are made here from integer formulas (no data files): a 4-frame 32x24 clip, a 24x16 image and a
300-Gaussian synthetic scene.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "codecs"
FAMILIES = ("video", "image", "scene")
EXTRA = ("latent", "neuralgs", "nirvana", "video-latent", "recombiner", "video-rd", "hinerv")  # written only
# when named: the latent-grid image codec (set v1-latent), NeuralGS (v1-neuralgs), NIRVANA (v1-nirvana),
# latent video (v1-video-latent; v2-video-latent-key: with a key frame), RECOMBINER (v1-recombiner;
# decoded with the shipped prior), rate-trained hnerv/nerv/nervpp (v3-video-rd), HiNeRV (v2-hinerv: the
# video layout's version 2)


def clip_frames(n: int = 4, w: int = 32, h: int = 24) -> np.ndarray:
    """Smooth moving gradients, uint8 (N, H, W, 3)."""
    t, y, x = np.meshgrid(np.arange(n), np.arange(h), np.arange(w), indexing="ij")
    r = (x * 7 + t * 5) % 256
    g = (y * 9 + t * 3) % 256
    b = ((x + y) * 4 + t * 11) % 256
    return np.stack([r, g, b], -1).astype(np.uint8)


def image_pixels(w: int = 24, h: int = 16) -> np.ndarray:
    y, x = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return np.stack([(x * 10) % 256, (y * 15) % 256, ((x * y) * 3) % 256], -1).astype(np.uint8)


def _run(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "fieldpress", *args], check=True, stdout=subprocess.DEVNULL)


def sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def decoded_video(path: Path) -> np.ndarray:
    from fieldpress.video.codec import open_video

    return open_video(path).decode()


def decoded_image(path: Path) -> np.ndarray:
    from fieldpress.codec.container import open_container

    return open_container(path).decoder().image()


def decoded_scene(path: Path) -> np.ndarray:
    from fieldpress.scenes.lightgaussian import read_fpg

    scene = read_fpg(path)
    parts = [scene.means, scene.scales, scene.quats, scene.opacities, scene.sh_dc, scene.sh_rest]
    return np.concatenate([p.detach().float().reshape(scene.n, -1).numpy() for p in parts], 1)


def main() -> None:
    import torch

    torch.set_num_threads(1)
    parser = argparse.ArgumentParser()
    parser.add_argument("--set", default="v1")
    parser.add_argument("--family", action="append", choices=FAMILIES + EXTRA,
                        help="only this family or codec (repeatable)")
    args = parser.parse_args()
    families = args.family or list(FAMILIES)
    out = OUT / args.set
    if out.exists():
        raise SystemExit(f"{out} exists: golden files are never rewritten")
    out.mkdir(parents=True)
    work = out / "_inputs"
    work.mkdir()
    import av
    from PIL import Image

    clip = work / "clip.mp4"
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("libx264rgb", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "rgb24"
        stream.options = {"qp": "0"}
        for frame in clip_frames():
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    image = work / "image.png"
    Image.fromarray(image_pixels()).save(image)
    from fieldpress.scenes import save_scene
    from fieldpress.scenes.synthetic import synthetic_scene

    scene = work / "scene.ply"
    save_scene(synthetic_scene(300, sh_degree=1, seed=3), scene)

    expected: dict[str, dict[str, str]] = {}
    if "video" in families:
        for model in ("hnerv", "nerv", "nervpp"):
            path = out / f"{model}.fpv"
            _run("fit-video", str(clip), "-o", str(path), "--model", model, "--size", "0.04M",
                 "--epochs", "2", "--seed", "1")
            expected[path.name] = {"codec": model, "sha256": sha256(decoded_video(path))}
    if "video-rd" in families:
        for model in ("hnerv", "nerv", "nervpp"):
            path = out / f"{model}-rd.fpv"
            _run("fit-video", str(clip), "-o", str(path), "--model", model, "--size", "0.04M",
                 "--epochs", "2", "--quality", "4", "--rd-epochs", "2", "--seed", "1")
            expected[path.name] = {"codec": model, "sha256": sha256(decoded_video(path))}
    if "nirvana" in families:
        path = out / "nirvana.fpv"
        _run("fit-video", str(clip), "-o", str(path), "--model", "nirvana", "--epochs", "3",
             "--group-size", "2", "--key-every", "2", "--quality", "4", "--seed", "1")
        expected[path.name] = {"codec": "nirvana", "sha256": sha256(decoded_video(path))}
    if "hinerv" in families:
        path = out / "hinerv.fpv"
        _run("fit-video", str(clip), "-o", str(path), "--preset", "hinerv-preview", "--size", "0.012M",
             "--epochs", "2", "--patch", "16", "--cam", "--seed", "1")
        expected[path.name] = {"codec": "hinerv", "sha256": sha256(decoded_video(path))}
    if "image" in families:
        path = out / "field.fpi"
        _run("fit-image", str(image), "-o", str(path), "--model", "cam-ffn", "--params", "9k",
             "--steps", "20", "--seed", "1")
        expected[path.name] = {"codec": "field", "sha256": sha256(decoded_image(path))}
    if "latent" in families:
        path = out / "latent.fpi"
        _run("fit-image", str(image), "-o", str(path), "--model", "latent", "--steps", "30", "--quality", "5",
             "--seed", "1")
        expected[path.name] = {"codec": "latent", "sha256": sha256(decoded_image(path))}
    if "video-latent" in families:
        path = out / "latent.fpv"
        _run("fit-video", str(clip), "-o", str(path), "--model", "latent", "--epochs", "15", "--quality", "5",
             "--seed", "1")
        expected[path.name] = {"codec": "latent", "sha256": sha256(decoded_video(path))}
    if "recombiner" in families:
        path = out / "recombiner.fpi"
        _run("fit-image", str(image), "-o", str(path), "--model", "recombiner", "--steps", "20",
             "--kl-budget", "0.5", "--block-bits", "10", "--finetune-chunks", "2", "--seed", "1")
        expected[path.name] = {"codec": "recombiner", "sha256": sha256(decoded_image(path))}
    if "scene" in families:
        path = out / "lightgaussian.fpg"
        _run("compress-splat", str(scene), "-o", str(path), "--preset", "fast", "--codebook", "16",
             "--no-eval")
        expected[path.name] = {"codec": "lightgaussian", "sha256": sha256(decoded_scene(path))}
    if "neuralgs" in families:
        path = out / "neuralgs.fpg"
        _run("compress-splat", str(scene), "-o", str(path), "--codec", "neuralgs", "--clusters", "3",
             "--mlp-width", "8", "--fit-steps", "30", "--finetune-steps", "2", "--no-eval")
        expected[path.name] = {"codec": "neuralgs", "sha256": sha256(decoded_scene(path))}
    for f in [*work.iterdir(), *out.glob("*.log.jsonl")]:
        f.unlink()
    work.rmdir()
    (out / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
