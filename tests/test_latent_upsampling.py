"""Polyphase bicubic upsampling equals PyTorch's bicubic interpolation, values and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fieldpress.fields.latent import upsampling


@pytest.mark.parametrize("factor", [2, 3, 4, 8, 64])
@pytest.mark.parametrize("shape", [(1, 1), (2, 5), (7, 3)])
def test_values_and_gradients_match_interpolate(factor: int, shape: tuple[int, int]) -> None:
    x = torch.randn(2, 1, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(factor))
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ref = F.interpolate(a, scale_factor=factor, mode="bicubic", align_corners=False)
    got = upsampling.bicubic_by(b, factor)
    assert got.shape == ref.shape
    assert torch.allclose(got, ref, atol=1e-12)
    weights = torch.randn_like(ref)
    (ref * weights).sum().backward()
    (got * weights).sum().backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-12)


def test_resize_takes_the_fast_path_only_for_training() -> None:
    x = torch.randn(1, 1, 4, 6)
    ref = F.interpolate(x, size=(16, 24), mode="bicubic", align_corners=False)
    assert torch.equal(upsampling.resize(x, (16, 24), "bicubic"), ref)  # decoding: the exact old path
    trained = upsampling.resize(x.clone().requires_grad_(), (16, 24), "bicubic")
    assert torch.allclose(trained, ref, atol=1e-5)
    odd = upsampling.resize(x.clone().requires_grad_(), (15, 23), "bicubic")  # not an integer factor
    assert torch.equal(odd, F.interpolate(x, size=(15, 23), mode="bicubic", align_corners=False))
