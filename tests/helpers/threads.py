"""One intra-op torch thread per test: on a shared, loaded 2-core machine OpenMP oversubscription
makes small convs and matmuls up to 30x slower. Import `one_thread` into a test module to apply it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Run the test with torch limited to one intra-op thread, then restore the previous setting."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
