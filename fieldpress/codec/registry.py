"""Codecs by kind and name: the header of every file names the codec that wrote it, and that codec
decodes it.

A file kind (video, image, scene) holds many codecs. Each is a `Codec`: `kind`, `name`, `version`,
`encode`, `decode(container)` and a torch-free `summarize(header)` for `fieldpress info`. Packages
register codecs by entry point in the group ``fieldpress.codecs`` (name ``kind/name``, value an object
satisfying `Codec`), so the core names no family and a new method is new files plus one entry point.
`LazyCodec` keeps a codec's heavy half (torch, models) in another module, imported on first
encode/decode, so listing codecs and summarising headers stay light.

Files written before codecs were named carry no ``codec`` key: each codec may claim such headers with
`legacy` (the v1 reader path).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

from fieldpress.errors import FormatError, InputError

ENTRY_POINT_GROUP = "fieldpress.codecs"
KINDS = ("video", "image", "scene")


@dataclass(frozen=True)
class Encoded:
    """What a codec's encode produces: a JSON-serialisable header and named streams (numpy arrays or
    tensors), with optional per-stream container codecs ("ans", "zstd", "raw"; default "auto")."""

    header: dict[str, Any]
    streams: dict[str, Any]
    stream_codecs: dict[str, str] = field(default_factory=dict)
    version: int | None = None  # the layout version this file needs (None: the codec's newest); a codec
    # whose newest layout is optional stamps older files with the older number, so older readers read them


@runtime_checkable
class Codec(Protocol):
    """The codec protocol: what a file kind's codec provides."""

    kind: str
    name: str
    version: int

    def encode(self, *args: Any, **kwargs: Any) -> Encoded: ...

    def decode(self, container: Any, **options: Any) -> Any: ...

    def summarize(self, header: Mapping[str, Any]) -> dict[str, Any]: ...


@dataclass(frozen=True)
class LazyCodec:
    """A codec whose encode/decode live in `implementation` ("module:attribute", an object with
    `encode(...) -> Encoded` and `decode(container, **options)`), imported on first use."""

    kind: str
    name: str
    version: int
    implementation: str
    summary: Callable[[Mapping[str, Any]], dict[str, Any]]
    legacy: Callable[[Mapping[str, Any]], bool] | None = None
    description: str = ""
    aliases: tuple[str, ...] = ()  # names that files written before the registry carry

    def _impl(self) -> Any:
        module, _, attr = self.implementation.partition(":")
        return getattr(importlib.import_module(module), attr)

    def encode(self, *args: Any, **kwargs: Any) -> Encoded:
        return self._impl().encode(*args, **kwargs)

    def decode(self, container: Any, **options: Any) -> Any:
        return self._impl().decode(container, **options)

    def verify(self, container: Any, **options: Any) -> bool:
        """Run the heavy half's `verify(container, **options)` (deep validation) when it has one; True if
        it ran. ``options`` (e.g. ``prior=``) are what its decoder needs besides the file."""
        hook = getattr(self._impl(), "verify", None)
        if hook is None:
            if options:
                raise InputError(f"codec {self.name} takes no verify options ({', '.join(sorted(options))})")
            return False
        if options:
            import inspect

            params = inspect.signature(hook).parameters
            extra = sorted(k for k in options if k not in params)
            if extra and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
                raise InputError(f"codec {self.name} does not use {', '.join(extra)} when verifying")
        hook(container, **options)
        return True

    def summarize(self, header: Mapping[str, Any]) -> dict[str, Any]:
        return self.summary(header)

    def claims_legacy(self, header: Mapping[str, Any]) -> bool:
        return self.legacy is not None and bool(self.legacy(header))


_REGISTERED: dict[tuple[str, str], Codec] = {}
_LOADED = False


def register_codec(codec: Codec) -> Codec:
    """Register `codec` in this process (entry points do this for installed packages)."""
    if codec.kind not in KINDS:
        raise ValueError(f"unknown file kind {codec.kind!r}; kinds: {', '.join(KINDS)}")
    _REGISTERED[(codec.kind, codec.name)] = codec
    return codec


def unregister_codec(kind: str, name: str) -> None:
    """Remove a codec registered in this process (tests)."""
    _REGISTERED.pop((kind, name), None)


def _load_entry_points() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            codec = ep.load()
        except (ImportError, AttributeError):
            # a codec whose optional dependencies are missing, or an entry point naming an object its
            # module lacks (installed metadata newer than the code): files of it say so when read
            continue
        if (codec.kind, codec.name) not in _REGISTERED:
            register_codec(codec)


def codecs(kind: str | None = None) -> dict[tuple[str, str], Codec]:
    """Every registered codec, or those of one kind, by (kind, name)."""
    _load_entry_points()
    return {k: c for k, c in sorted(_REGISTERED.items()) if kind is None or k[0] == kind}


def get_codec(kind: str, name: str) -> Codec:
    """The codec `name` of `kind` (InputError naming the choices when there is none)."""
    found = codecs(kind).get((kind, name))
    if found is None:
        names = ", ".join(n for _, n in codecs(kind)) or "none installed"
        raise InputError(f"no {kind} codec named {name!r} (installed: {names})")
    return found


def codec_for(kind: str, header: Mapping[str, Any]) -> Codec:
    """The codec that reads a file of `kind` with `header`: the one it names, or for files written
    before codecs were named, the one that claims it. FormatError when none can."""
    name = header.get("codec")
    if name is None:
        for codec in codecs(kind).values():
            claims = getattr(codec, "claims_legacy", None)
            if claims is not None and claims(header):
                return codec
        raise FormatError(f"this {kind} file names no codec and no installed codec reads it")
    if not isinstance(name, str):
        raise FormatError(f"bad codec name in the header: {name!r}")
    codec = codecs(kind).get((kind, name)) or next(
        (c for c in codecs(kind).values() if name in getattr(c, "aliases", ())), None)
    if codec is None:
        names = ", ".join(n for _, n in codecs(kind)) or "none"
        raise FormatError(f"this {kind} file was written by codec {name!r}, which is not installed "
                          f"(installed {kind} codecs: {names})")
    version = header.get("codec_version", 1)
    if not isinstance(version, int) or version < 1:
        raise FormatError(f"bad codec_version in the header: {version!r}")
    if version > codec.version:
        raise FormatError(f"written by {kind} codec {name!r} version {version}; this fieldpress reads up "
                          f"to version {codec.version}: upgrade fieldpress")
    return codec


def stamped_header(codec: Codec, header: Mapping[str, Any], version: int | None = None) -> dict[str, Any]:
    """`header` with the codec's name and version first, as every file written now carries them
    (`version`: an older layout version the file needs no more than; default the codec's newest)."""
    if version is not None and not 1 <= version <= codec.version:
        raise ValueError(f"codec {codec.name!r} writes layout versions 1..{codec.version}, not {version}")
    rest = {k: v for k, v in header.items() if k not in ("codec", "codec_version")}
    return {"codec": codec.name, "codec_version": codec.version if version is None else version, **rest}


def encode_file(codec: Codec, encoded: Encoded) -> bytes:
    """The container bytes of an encoded result, its header stamped with the codec (deterministic:
    the same bytes `write_file` writes, so sizes and bpp can be measured before writing)."""
    from fieldpress.codec.container import encode_container

    header = stamped_header(codec, encoded.header, encoded.version)
    return encode_container(codec.kind, header, encoded.streams, encoded.stream_codecs or None)


def write_file(path: Any, codec: Codec, encoded: Encoded) -> int:
    """Write an encoded result atomically as a container file; returns its size in bytes."""
    from fieldpress.io import atomic_write_bytes

    return atomic_write_bytes(path, encode_file(codec, encoded))


@dataclass
class Result:
    """What a family's `compress(input, options, device)` returns: the file's bytes (not yet written)
    and what was measured on them. `metrics` uses the DESIGN names: psnr, psnr_frame_mean, ms_ssim, bpp
    (video, images); gaussians_in, gaussians_out, bytes_per_gaussian, render_psnr (scenes); plus the
    family's own facts."""

    codec: Codec
    data: bytes
    metrics: dict[str, Any]
    input: str | None = None
    seconds: float = 0.0
    device: str = "cpu"

    @property
    def bytes(self) -> int:
        return len(self.data)

    def write(self, path: Any) -> int:
        """Write the file atomically; returns its size in bytes."""
        from fieldpress.io import atomic_write_bytes

        return atomic_write_bytes(path, self.data)
