"""Quantization proxies: soft-round limits, straight-through gradients, the schedule."""

from __future__ import annotations

import torch

from fieldpress.codec import proxies


def test_soft_round_limits():
    x = torch.linspace(-3, 3, 601)
    cold = proxies.soft_round(x, 0.01)
    off_half = (x - torch.floor(x) - 0.5).abs() > 0.05
    assert torch.allclose(cold[off_half], torch.round(x)[off_half], atol=1e-3)
    hot = proxies.soft_round(x, 50.0)
    assert torch.allclose(hot, x, atol=1e-3)
    assert torch.equal(proxies.soft_round(x, 0.0), torch.round(x))


def test_straight_through_gradient_is_identity():
    x = torch.tensor([0.2, 1.7, -2.4], requires_grad=True)
    y = proxies.straight_through_round(x)
    assert torch.equal(y.detach(), torch.round(x.detach()))
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones(3))


def test_noise_is_bounded_and_seeded():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    x = torch.zeros(1000)
    a, b = proxies.uniform_noise(x, 1.0, g1), proxies.uniform_noise(x, 1.0, g2)
    assert torch.equal(a, b) and a.abs().max() <= 0.5


def test_schedule_anneals_then_straight_through():
    cfg = proxies.ProxySchedule(t_start=0.3, t_end=0.1, ste_fraction=0.1)
    temps = [proxies.schedule(p, cfg).temperature for p in (0.0, 0.3, 0.6, 0.89)]
    assert temps[0] == 0.3 and all(a >= b for a, b in zip(temps, temps[1:]))
    assert proxies.schedule(0.95, cfg).mode == "ste"
    assert proxies.schedule(-1, cfg).mode == "softround" and proxies.schedule(2, cfg).mode == "ste"
    x = torch.tensor([0.4, 1.6], requires_grad=True)
    proxies.apply(x, proxies.schedule(0.5, cfg)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
