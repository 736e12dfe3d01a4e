"""Deep validation (`fieldpress info --verify`): a file this calls valid decodes.

`verify_container` decodes every stream through its entropy decoder (ANS tables, symbol ranges,
zstd sizes), rebuilds every quantized state dict its header describes (`fieldpress.state/1`: symbol
ranges against the bit widths, shapes, scales), and then runs the codec's own `verify(container)`
hook when the codec has one (the families check their layouts there: scene attributes, the weights
against the network the header names, side-information chunks). Nothing is rendered and no frame is
run, so it costs about one decode of the payloads. Every problem is a one-line FormatError.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fieldpress.errors import FormatError

# what a codec hook may raise on a crafted file besides FormatError; reported as "does not decode"
DECODE_ERRORS = (ValueError, KeyError, TypeError, IndexError, RuntimeError, OverflowError)


@dataclass(frozen=True)
class VerifyReport:
    """What deep validation decoded: streams, their decoded bytes, state dicts, and the codec hook."""

    streams: int
    decoded_bytes: int
    state_dicts: int
    codec_checked: bool

    def to_dict(self) -> dict[str, Any]:
        return {"streams": self.streams, "decoded_bytes": self.decoded_bytes,
                "state_dicts": self.state_dicts, "codec_checked": self.codec_checked}


def state_metas(header: Any, path: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every quantized state-dict description (`fieldpress.state/1`) anywhere in a header."""
    from fieldpress.codec.quant import STATE_FORMAT

    if isinstance(header, Mapping):
        if header.get("format") == STATE_FORMAT:
            yield path, header
            return
        for key, value in header.items():
            yield from state_metas(value, f"{path}.{key}" if path else str(key))
    elif isinstance(header, list):
        for i, value in enumerate(header):
            yield from state_metas(value, f"{path}[{i}]")


def verify_container(container: Any, codec: Any = None,
                     options: Mapping[str, Any] | None = None) -> VerifyReport:
    """Decode everything a file holds without running a model; FormatError naming what fails.

    `codec`: check with this codec's hook instead of the one the header names (the fuzz harness);
    `options`: what the codec's decoder needs besides the file (e.g. a RECOMBINER file's ``prior``)."""
    decoded = 0
    arrays: dict[str, np.ndarray] = {}
    for name in container.names:
        arrays[name] = container.array(name)
        decoded += arrays[name].nbytes
    states = 0
    for where, meta in state_metas(container.header):
        from fieldpress.codec.quant import decompress_state_dict

        try:
            decompress_state_dict(arrays, meta)
        except FormatError as exc:
            raise FormatError(f"{container.path}: weights {where!r}: {exc}") from None
        states += 1
    codec = container.codec() if codec is None else codec
    hook = getattr(codec, "verify", None)
    checked = False
    if callable(hook):
        try:
            checked = bool(hook(container, **(options or {})))
        except FormatError as exc:
            raise FormatError(f"{container.path}: {exc}") from None
        except DECODE_ERRORS as exc:
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise FormatError(f"{container.path}: does not decode ({type(exc).__name__}: {first})") from None
    return VerifyReport(len(arrays), decoded, states, checked)
