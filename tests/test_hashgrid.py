"""The hash grid follows tiny-cuda-nn's rules.

The expected vectors below were derived BY HAND from tcnn's documented rules (grid.h level table,
common_device.h position/hash/index), working each level and corner out on paper; they were NOT
produced by running the tcnn binary (tcnn needs a CUDA GPU and cannot be installed here).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fieldpress.cuda.hashgrid_ref import HashGridSpec, hashgrid_ref, init_hashgrid_params
from fieldpress.fields.encodings import Encoding, GridEncoding

# params[(entry) * F + f] = entry + 0.1 * f, so each gathered value names its table entry.
F = 2


def entry_params(spec: HashGridSpec) -> torch.Tensor:
    e = torch.arange(spec.n_entries, dtype=torch.float64)[:, None]
    return (e + 0.1 * torch.arange(F, dtype=torch.float64)[None, :]).reshape(-1).float()


CFG_2D = {
    "otype": "HashGrid",
    "n_levels": 2,
    "n_features_per_level": 2,
    "log2_hashmap_size": 3,
    "base_resolution": 2,
    "per_level_scale": 2.0,
}
CFG_2D_T5 = {**CFG_2D, "log2_hashmap_size": 5, "base_resolution": 4}
CFG_3D = {**CFG_2D}


def test_level_table_2d_by_hand() -> None:
    # level 0: scale 2*1-1 = 1, res 2, 2^2=4 -> 8 entries (aligned to 8), dense (8 >= 4)
    # level 1: scale 2*2-1 = 3, res 4, 4^2=16 -> min(16, 2^3) = 8 entries, hashed (8 < 16)
    spec = HashGridSpec.from_config(CFG_2D, 2)
    assert spec.scales == (1.0, 3.0)
    assert spec.resolutions == (2, 4)
    assert spec.sizes == (8, 8)
    assert spec.offsets == (0, 8)
    assert spec.hashed == (False, True)
    assert spec.n_params == 32


def test_level_table_3d_and_default_by_hand() -> None:
    # 3D, level 0: res 2, 8 -> 8 entries, dense; level 1: res 4, 64 -> min(64, 8) = 8, hashed
    spec = HashGridSpec.from_config(CFG_3D, 3)
    assert spec.resolutions == (2, 4) and spec.sizes == (8, 8) and spec.hashed == (False, True)
    # tcnn's documented defaults with per_level_scale 1.5, 3D, T=19: scale_1 = 16*1.5-1 = 23 -> res 24,
    # 24^3 = 13824 entries (a multiple of 8); res 81 -> 531441 > 2^19 = 524288: first hashed level.
    big = HashGridSpec.from_config({"otype": "HashGrid", "per_level_scale": 1.5}, 3)
    assert big.resolutions[:5] == (16, 24, 36, 54, 81)
    assert big.sizes[:5] == (4096, 13824, 46656, 157464, 524288)
    assert big.hashed[:5] == (False, False, False, False, True)
    # a dense level whose r^d is not a multiple of 8 is padded: 2D res 3 -> 9 -> 16 entries
    odd = HashGridSpec.from_config({"otype": "HashGrid", "n_levels": 1, "base_resolution": 3}, 2)
    assert odd.resolutions == (3,) and odd.sizes == (16,) and odd.hashed == (False,)


def test_hand_vectors_2d() -> None:
    spec = HashGridSpec.from_config(CFG_2D, 2)
    x = torch.tensor([[0.25, 0.5], [1.0, 1.0]])
    out = hashgrid_ref(x, entry_params(spec), spec)
    # point (0.25, 0.5)
    #  L0: pos = (0.75, 1.0): corner (0,1) w .25 dense idx 0+1*2=2; (1,1) w .75 idx 3; y-frac 0 -> others w 0
    #      f0 = .25*2 + .75*3 = 2.75
    #  L1: pos = (1.25, 2.0): corners (1,2) w .75, (2,2) w .25.
    #      hash(1,2) = 1 ^ (2*2654435761 mod 2^32 = 1013904226) = 1013904227 -> % 8 = 3 -> entry 8+3 = 11
    #      hash(2,2) = 2 ^ 1013904226 = 1013904224 -> % 8 = 0 -> entry 8
    #      f0 = .75*11 + .25*8 = 10.25
    # point (1, 1)
    #  L0: pos = (1.5, 1.5): corners (1,1),(2,1),(1,2),(2,2) w .25 each, dense idx 3, 4, 5, 6 -> 4.5
    #  L1: pos = (3.5, 3.5): (3,3),(4,3),(3,4),(4,4); the prime is 1 mod 8, so idx = (x ^ y) & 7:
    #      0, 7, 7, 0 -> entries 8, 15, 15, 8 -> 11.5
    expected = torch.tensor([[2.75, 2.85, 10.25, 10.35], [4.5, 4.6, 11.5, 11.6]])
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_hand_vectors_2d_prime_matters() -> None:
    # base 4: L0 scale 3 res 4, 16 entries dense; L1 scale 7 res 8, 64 -> min(64, 32) = 32, hashed.
    spec = HashGridSpec.from_config(CFG_2D_T5, 2)
    assert spec.resolutions == (4, 8) and spec.sizes == (16, 32) and spec.hashed == (False, True)
    x = torch.tensor([[0.5, 0.25]])
    out = hashgrid_ref(x, entry_params(spec), spec)
    # L0: pos = (2.0, 1.25): corners (2,1) w .75 idx 2+1*4 = 6; (2,2) w .25 idx 10 -> 4.5+2.5 = 7.0
    # L1: pos = (4.0, 2.25): corners (4,2) w .75, (4,3) w .25.
    #     2654435761 = 17 mod 32, so idx = (x ^ (17*y mod 32)) mod 32:
    #     (4,2): 4 ^ 2 = 6; (4,3): 4 ^ (51 mod 32 = 19) = 23 -> entries 16+6 = 22, 16+23 = 39
    #     f0 = .75*22 + .25*39 = 26.25
    expected = torch.tensor([[7.0, 7.1, 26.25, 26.35]])
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_hand_vectors_3d() -> None:
    spec = HashGridSpec.from_config(CFG_3D, 3)
    assert spec.n_params == 32
    x = torch.tensor([[0.25, 0.5, 0.75]])
    out = hashgrid_ref(x, entry_params(spec), spec)
    # L0 (dense, res 2): pos = (0.75, 1.0, 1.25): floor (0,1,1), frac (.75, 0, .25)
    #   nonzero corners (y-frac 0): (0,1,1) w .25*.75 = .1875 idx 0+2+4 = 6
    #                               (1,1,1) w .75*.75 = .5625 idx 7
    #                               (0,1,2) w .25*.25 = .0625 idx 0+2+8 = 10 -> % 8 = 2 (wraps)
    #                               (1,1,2) w .75*.25 = .1875 idx 11 % 8 = 3
    #   f0 = .1875*6 + .5625*7 + .0625*2 + .1875*3 = 5.75
    # L1 (hashed, res 4): pos = (1.25, 2.0, 2.75): floor (1,2,2), frac (.25, 0, .75)
    #   idx mod 8 = (x ^ y ^ (805459861*z mod 8 = 5z mod 8)) & 7
    #   (1,2,2) w .75*.25 = .1875: 1^2^2 = 1 ; (2,2,2) w .25*.25 = .0625: 2^2^2 = 2
    #   (1,2,3) w .75*.75 = .5625: 1^2^7 = 4 ; (2,2,3) w .25*.75 = .1875: 2^2^7 = 7
    #   entries 9, 10, 12, 15 -> f0 = .1875*9 + .0625*10 + .5625*12 + .1875*15 = 11.875
    expected = torch.tensor([[5.75, 5.85, 11.875, 11.975]])
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_smoothstep_and_nearest_by_hand() -> None:
    x = torch.tensor([[0.25, 0.5]])
    smooth = HashGridSpec.from_config({**CFG_2D, "interpolation": "Smoothstep"}, 2)
    out = hashgrid_ref(x, entry_params(smooth), smooth)
    # L0 frac (.75, 0): smoothstep(.75) = .84375 -> .15625*2 + .84375*3 = 2.84375
    # L1 frac (.25, 0): smoothstep(.25) = .15625 -> .84375*11 + .15625*8 = 10.53125
    torch.testing.assert_close(out[:, ::2], torch.tensor([[2.84375, 10.53125]]), rtol=0, atol=1e-5)
    nearest = HashGridSpec.from_config({**CFG_2D, "interpolation": "Nearest"}, 2)
    out = hashgrid_ref(x, entry_params(nearest), nearest)
    # floor corners only: L0 (0,1) -> entry 2; L1 (1,2) -> entry 11
    torch.testing.assert_close(out[:, ::2], torch.tensor([[2.0, 11.0]]), rtol=0, atol=1e-6)


def _scalar_oracle(x: np.ndarray, params: np.ndarray, spec: HashGridSpec) -> np.ndarray:
    """Python-int, one-point-at-a-time restatement of the rules (independent of the vectorised code)."""
    primes = (1, 2654435761, 805459861)
    d, f = spec.n_dims, spec.n_features_per_level
    out = np.zeros((len(x), spec.n_levels * f))
    for n, point in enumerate(x):
        for lvl in range(spec.n_levels):
            s, r, size, off = spec.scales[lvl], spec.resolutions[lvl], spec.sizes[lvl], spec.offsets[lvl]
            pos = [float(np.float32(s * float(v) + 0.5)) for v in point]
            base = [math.floor(p) for p in pos]
            frac = [p - b for p, b in zip(pos, base)]
            for c in range(1 << d):
                corner = [base[k] + ((c >> k) & 1) for k in range(d)]
                w = math.prod(frac[k] if (c >> k) & 1 else 1 - frac[k] for k in range(d))
                if spec.hashed[lvl]:
                    idx = 0
                    for k in range(d):
                        idx ^= (corner[k] * primes[k]) % 2**32
                else:
                    idx = sum(corner[k] * r**k for k in range(d))
                idx %= size
                for j in range(f):
                    out[n, lvl * f + j] += w * float(params[(off + idx) * f + j])
    return out


@pytest.mark.parametrize(
    "dims,cfg",
    [
        (
            2,
            {
                "otype": "HashGrid",
                "n_levels": 4,
                "log2_hashmap_size": 6,
                "base_resolution": 3,
                "per_level_scale": 1.7,
            },
        ),
        (
            3,
            {
                "otype": "HashGrid",
                "n_levels": 3,
                "n_features_per_level": 4,
                "log2_hashmap_size": 7,
                "base_resolution": 2,
                "per_level_scale": 2.3,
            },
        ),
        (2, {"otype": "DenseGrid", "n_levels": 2, "base_resolution": 5, "per_level_scale": 1.5}),
        (3, {"otype": "TiledGrid", "n_levels": 2, "n_features_per_level": 1, "base_resolution": 3}),
    ],
)
def test_matches_scalar_oracle(dims: int, cfg: dict) -> None:
    spec = HashGridSpec.from_config(cfg, dims)
    gen = torch.Generator().manual_seed(3)
    params = torch.randn(spec.n_params, generator=gen)
    x = torch.rand(64, dims, generator=gen)
    x[0] = 0.0
    x[1] = 1.0
    got = hashgrid_ref(x, params, spec).double().numpy()
    want = _scalar_oracle(x.numpy(), params.numpy(), spec)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_stored_flat_params_load_with_identical_outputs(tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    cfg = {
        "otype": "HashGrid",
        "n_levels": 4,
        "n_features_per_level": 2,
        "log2_hashmap_size": 8,
        "base_resolution": 4,
        "per_level_scale": 2.0,
    }
    enc = Encoding(cfg, 2, seed=7)
    assert isinstance(enc, GridEncoding)
    with torch.no_grad():
        enc.params.copy_(torch.randn_like(enc.params))
    # a tcnn module's state dict is {"params": flat vector}; ours has the same key and layout
    save_file({"params": enc.params.detach().clone()}, tmp_path / "grid.safetensors")
    other = Encoding(cfg, 2, seed=99)
    other.load_state_dict(load_file(tmp_path / "grid.safetensors"))
    x = torch.rand(200, 2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(enc(x), other(x))
    assert torch.equal(other(x), hashgrid_ref(x, other.params.detach(), other.spec))


def test_init_and_gradients() -> None:
    spec = HashGridSpec.from_config({"otype": "HashGrid", "n_levels": 3, "log2_hashmap_size": 6}, 2)
    p = init_hashgrid_params(spec, torch.Generator().manual_seed(0))
    assert p.shape == (spec.n_params,) and float(p.abs().max()) <= 1e-4 and float(p.std()) > 1e-5
    params = torch.randn(spec.n_params, dtype=torch.float64, requires_grad=True)
    x = torch.rand(8, 2, dtype=torch.float64).clamp(0.05, 0.95).requires_grad_(True)

    def fn(xx, pp):
        return hashgrid_ref(xx, pp.float(), spec).double()

    y = fn(x, params)
    y.sum().backward()
    assert params.grad is not None and float(params.grad.abs().sum()) > 0
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_bad_configs() -> None:
    with pytest.raises(ValueError):
        HashGridSpec.from_config({"otype": "HashGrid", "n_features_per_level": 3}, 2)
    with pytest.raises(ValueError):
        HashGridSpec.from_config({"otype": "Frequency"}, 2)
    with pytest.raises(ValueError):
        hashgrid_ref(torch.rand(4, 3), torch.zeros(32), HashGridSpec.from_config(CFG_2D, 2))
