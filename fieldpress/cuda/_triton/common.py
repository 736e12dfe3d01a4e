"""Small Triton helpers shared by the kernels (a conservative API subset that Triton 3.x compiles)."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def round_half_even(v):
    """torch.round on float32, exactly: floor, then the exact fraction decides (ties to even)."""
    r = tl.floor(v)
    d = v - r  # exact for every finite float
    odd = (r - 2.0 * tl.floor(r * 0.5)) != 0.0
    up = (d > 0.5) | ((d == 0.5) & odd)
    return tl.where(up, r + 1.0, r)


def next_pow2(n: int) -> int:
    """Smallest power of two >= max(n, 1)."""
    return 1 << max(int(n) - 1, 0).bit_length()
