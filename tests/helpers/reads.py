"""Record which streams of an opened container are decoded (random-access tests)."""

from __future__ import annotations

from typing import Any


def record_reads(container: Any) -> list[str]:
    """Wrap `container.array` so every decoded stream's name is appended to the returned list."""
    read: list[str] = []
    original = container.array

    def spy(name: str) -> Any:
        read.append(name)
        return original(name)

    container.array = spy
    return read
