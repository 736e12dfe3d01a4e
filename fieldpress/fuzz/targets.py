"""What the fuzz harness feeds: the container, every registered codec's decoder, every scene reader.

Targets are discovered, never listed: codecs through `fieldpress.codec.registry.codecs()` and scene
formats through the `fieldpress.scene_formats` entry points, so a codec or format gets fuzzed by
registering. Seeds: the golden files in `tests/golden/`, the real files in `../shared/data/`
(when present), and small files each scene writer makes from a seed scene.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from fieldpress.errors import FormatError

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
SHARED = ROOT.parent / "shared" / "data"
SCENE_FORMATS_GROUP = "fieldpress.scene_formats"
MAX_SEED_BYTES = 4 << 20


@dataclass(frozen=True)
class Target:
    """One thing to fuzz: a name, seed inputs, and `run(data)` (any InputError is a clean reject)."""

    name: str
    seeds: tuple[bytes, ...]
    run: Callable[[bytes], Any]
    container: bool = False  # seeds are containers: structure-aware mutations apply


def container_seeds() -> list[bytes]:
    """Every container in tests/golden (and any .fp? file in the shared data)."""
    roots = [GOLDEN] + ([SHARED] if SHARED.is_dir() else [])
    files = sorted({p for r in roots for p in r.rglob("*") if p.suffix in (".fpv", ".fpi", ".fpg")})
    return [p.read_bytes() for p in files if p.stat().st_size <= MAX_SEED_BYTES]


def _decode_container(data: bytes) -> None:
    from fieldpress.codec.container import open_container

    c = open_container(data)
    for name in c.names:
        c.array(name)


def _decoder_run(kind: str, codec: Any) -> Callable[[bytes], Any]:
    """Deep-verify with this codec, then run its decoder once (one frame, the image, the scene)."""
    from fieldpress.codec.container import open_container
    from fieldpress.codec.verify import verify_container

    def run(data: bytes) -> None:
        c = open_container(data)
        if c.kind != kind:
            raise FormatError(f"not a {kind} container")
        verify_container(c, codec)
        decoder = codec.decode(c)
        finish = {"video": lambda d: d.decode(0, 1), "image": lambda d: d.image(),
                  "scene": lambda d: d.scene()}.get(kind)
        if finish is not None:
            finish(decoder)

    return run


def codec_targets(seeds: list[bytes]) -> list[Target]:
    """One target per registered codec, seeded with the containers of its kind whose header it reads."""
    from fieldpress.codec.container import open_container
    from fieldpress.codec.registry import codec_for, codecs

    out = []
    for (kind, name), codec in codecs().items():
        mine = []
        for blob in seeds:
            c = open_container(blob)
            try:
                if c.kind == kind and codec_for(kind, c.header).name == name:
                    mine.append(blob)
            except FormatError:
                continue
        out.append(Target(f"codec:{kind}/{name}", tuple(mine or [b for b in seeds
                                                                 if open_container(b).kind == kind]),
                          _decoder_run(kind, codec), container=True))
    return out


def scene_formats() -> dict[str, Any]:
    """Every scene format by entry point (name -> SceneFormat), loaded."""
    found = {}
    for ep in entry_points(group=SCENE_FORMATS_GROUP):
        try:
            found[ep.name] = ep.load()
        except ImportError:
            continue
    return found


def _reader_run(fmt: Any, workdir: Path) -> Callable[[bytes], Any]:
    """Write the bytes under the format's suffix, sniff them and read them with the format's reader."""
    path = workdir / ("fuzz" + fmt.suffixes[0])

    def run(data: bytes) -> None:
        path.write_bytes(data)
        if fmt.sniff is not None:
            fmt.sniff(data[:4096], path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scene = fmt.read(path)
        scene.validate()

    return run


def _written_seeds(formats: dict[str, Any], workdir: Path, skip: set[str]) -> dict[str, list[bytes]]:
    """Small files every writer (but those in `skip`) makes from one seed scene (48 Gaussians of a
    real PLY, or of the golden .fpg); the PLY writer in ASCII and big endian too, SPZ v2-v4."""
    base = None
    for name, source in (("ply", SHARED / "gaussians" / "trailing_bytes.ply"),
                         ("fpg", GOLDEN / "codecs" / "v1" / "lightgaussian.fpg")):
        if name in formats and source.is_file():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                base = formats[name].read(source)
            break
    out: dict[str, list[bytes]] = {n: [] for n in formats}
    if base is None:
        return out
    base = base.subset(list(range(min(base.n, 48))))
    variants = {"ply": [{"format": "ascii"}, {"format": "binary_big_endian"}, {}],
                "spz": [{"version": 2}, {"version": 3}, {"version": 4}]}
    for name, fmt in formats.items():
        if fmt.write is None or name in skip:
            continue
        for options in variants.get(name, [{}]):
            path = workdir / f"seed{fmt.suffixes[0]}"
            try:
                fmt.write(base, path, **options)
            except TypeError:
                continue
            out[name].append(path.read_bytes())
    return out


def scene_targets(workdir: Path) -> list[Target]:
    """One target per scene format, seeded with the real and golden files it sniffs, and files its
    writer makes (formats that read containers take the golden containers instead)."""
    formats = scene_formats()
    real = sorted((SHARED / "gaussians").glob("*")) if (SHARED / "gaussians").is_dir() else []
    containers = sorted(p for p in GOLDEN.rglob("*") if p.suffix in (".fpv", ".fpi", ".fpg"))
    found: dict[str, list[bytes]] = {}
    skip = set()
    for name, fmt in formats.items():
        found[name] = []
        for path in real + containers:
            head = path.read_bytes()[:4096]
            ok = fmt.sniff(head, path) if fmt.sniff else any(path.name.endswith(s) for s in fmt.suffixes)
            if ok and path.stat().st_size <= MAX_SEED_BYTES:
                found[name].append(path.read_bytes())
                skip |= {name} if path in containers else set()
    written = _written_seeds(formats, workdir, skip)
    return [Target(f"scene:{name}", tuple(written.get(name, []) + found[name]) or (b"",),
                   _reader_run(fmt, workdir))
            for name, fmt in sorted(formats.items()) if fmt.read is not None]


def all_targets(workdir: Path | None = None) -> list[Target]:
    """The container target, one per codec, one per scene format."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="fieldpress-fuzz-"))
    seeds = container_seeds()
    return ([Target("container", tuple(seeds), _decode_container, container=True)]
            + codec_targets(seeds) + scene_targets(workdir))
