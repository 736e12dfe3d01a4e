"""Training fast paths equal the decoder's paths, values and gradients: polyphase bicubic upsampling
against PyTorch's bicubic interpolation, channels-last residual blocks against the default layout."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fieldpress.fields.latent import upsampling
from fieldpress.fields.latent.config import LatentConfig
from fieldpress.fields.latent.fit import FitConfig, latent_optimizer
from fieldpress.fields.latent.model import LatentImageModel, Synthesis, residual_blocks


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


def test_residual_blocks_train_channels_last_with_the_decoders_values_and_gradients() -> None:
    torch.manual_seed(0)
    blocks = Synthesis(4, 8, 2).blocks
    for conv in blocks:  # not the near-identity start: every conv matters
        torch.nn.init.normal_(conv.weight, std=0.3)
    x = torch.randn(3, 3, 10, 12)
    with torch.no_grad():
        decoded = residual_blocks(blocks, x)
    assert decoded.is_contiguous()  # decoding keeps its layout
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    trained = residual_blocks(blocks, a)
    assert trained.is_contiguous(memory_format=torch.channels_last)
    ref = b
    for conv_a, conv_b in zip(blocks[0::2], blocks[1::2]):
        ref = ref + conv_b(torch.relu(conv_a(ref)))
    assert torch.allclose(trained, decoded, atol=1e-5) and torch.allclose(ref, decoded, atol=1e-5)
    weights = torch.randn_like(decoded)
    (trained * weights).sum().backward()
    (ref * weights).sum().backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-5)


def test_the_optimizer_takes_the_fits_second_moment_decay() -> None:
    model = LatentImageModel(LatentConfig(), 8, 8)
    assert [g["betas"] for g in latent_optimizer(model, FitConfig()).param_groups] == [(0.9, 0.999)] * 2
    assert [g["betas"] for g in latent_optimizer(model, FitConfig(adam_beta2=0.95)).param_groups] == \
        [(0.9, 0.95)] * 2
