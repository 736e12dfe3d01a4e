"""fieldpress.cuda: the references, the dispatch, and Triton-vs-reference parity.

Without a GPU the Triton kernels run on CPU tensors under TRITON_INTERPRET=1, which must be set
before the kernel modules are imported (the fixture below does it for this module only); with a
GPU the same parity tests run the compiled kernels on CUDA tensors.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import fieldpress.cuda as fc
from fieldpress.cuda import _backend
from fieldpress.cuda.hashgrid_ref import HashGridSpec, hashgrid_ref, init_hashgrid_params

HAS_CUDA = torch.cuda.is_available()
DEVICE = "cuda" if HAS_CUDA else "cpu"


def _rand(*shape, seed=0, device="cpu", dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float32).to(device=device, dtype=dtype)


def _qparams(x: torch.Tensor, bits: int, axis: int | None, symmetric: bool = False):
    """DEVELOPING.md's quant_params rules (asymmetric / symmetric), computed here independently."""
    dims = [d for d in range(x.dim()) if d != axis] if axis is not None else list(range(x.dim()))
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        amax = x.abs().amax(dim=dims) if dims else x.abs()
        scale = torch.clamp(amax / qmax, min=1e-12)
        return scale, torch.zeros_like(scale), -qmax, qmax
    qmax = 2**bits - 1
    lo = x.amin(dim=dims) if dims else x
    hi = x.amax(dim=dims) if dims else x
    scale = torch.clamp((hi - lo) / qmax, min=1e-12)
    return scale, torch.round(-lo / scale), 0, qmax


# ---------------------------------------------------------------- references


@pytest.mark.parametrize(
    "axis,symmetric,bits", [(None, False, 8), (0, False, 4), (1, True, 6), (-1, False, 2)]
)
def test_fake_quantize_ref_is_the_contract_formula(axis, symmetric, bits):
    x = _rand(5, 7, seed=1)
    scale, zp, qmin, qmax = _qparams(x, bits, None if axis is None else axis % 2, symmetric)
    y = fc.fake_quantize_ref(x, scale, zp, qmin, qmax, axis)
    shape = [1, 1]
    if axis is not None:
        shape[axis % 2] = -1
    s, z = scale.reshape(shape), zp.reshape(shape)
    expected = (torch.clamp(torch.round(x / s) + z, qmin, qmax) - z) * s
    assert torch.equal(y, expected)
    assert y.dtype == torch.float32 and y.shape == x.shape


def test_fake_quantize_rounds_half_to_even_and_clips_gradient():
    scale = torch.tensor(0.5)
    x = torch.tensor([0.25, 0.75, -0.25, 1.25, 10.0, -10.0], requires_grad=True)
    y = fc.fake_quantize_ref(x, scale, torch.tensor(0.0), -4, 4, None)
    assert y.tolist() == [0.0, 1.0, -0.0, 1.0, 2.0, -2.0]  # 0.5->0, 1.5->2, -0.5->0, 2.5->2, clamped
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]


def test_rate_is_the_empirical_code_length():
    x = _rand(64, 3, seed=2) * 3
    scale, zp, qmin, qmax = _qparams(x, 4, 1)
    y, bits = fc.fake_quantize_with_rate_ref(x, scale, zp, qmin, qmax, 1)
    q = torch.clamp(torch.round(x / scale) + zp, qmin, qmax).numpy().astype(np.int64).ravel()
    _, counts = np.unique(q, return_counts=True)
    p = counts / counts.sum()
    assert bits.item() == pytest.approx(float(-(counts * np.log2(p)).sum()), rel=1e-6)
    assert torch.equal(y, fc.fake_quantize_ref(x, scale, zp, qmin, qmax, 1))


def test_rate_gradient_is_the_linear_pmf_proxy():
    x = (_rand(40, seed=3) * 2).requires_grad_()
    scale, zp, qmin, qmax = torch.tensor(0.3), torch.tensor(8.0), 0, 15
    _, bits = fc.fake_quantize_with_rate_ref(x, scale, zp, qmin, qmax, None)
    (gx,) = torch.autograd.grad(bits, x)
    # the proxy: -sum log2 p~(u), p~ the fixed empirical pmf interpolated linearly between symbols
    q = torch.clamp(torch.round(x.detach() / scale) + zp, qmin, qmax).long()
    pmf = torch.bincount(q, minlength=16).float() / q.numel()
    xr = x.detach().clone().requires_grad_()
    u = torch.clamp(xr / scale + zp, qmin, qmax)
    k = torch.clamp(torch.floor(u.detach()), qmin, qmax - 1)
    f = u - k
    pt = (1 - f) * pmf[k.long()] + f * pmf[k.long() + 1]
    (-torch.log2(pt)).sum().backward()
    inside = (torch.round(x.detach() / scale) + zp >= qmin) & (torch.round(x.detach() / scale) + zp <= qmax)
    assert torch.allclose(gx, torch.where(inside, xr.grad, 0.0), rtol=1e-5, atol=1e-6)
    assert bits.item() == pytest.approx((-torch.log2(pmf[q])).sum().item(), rel=1e-5)


def test_vq_assign_ref_blocks_match_brute_force():
    x, cb = _rand(53, 6, seed=4), _rand(29, 6, seed=5)
    index, sqdist = fc.vq_assign_ref(x, cb, budget=37)  # forces blocks over both N and K
    full = torch.cdist(x.double(), cb.double()) ** 2
    assert torch.equal(index, full.argmin(1))
    assert torch.allclose(sqdist.double(), full.min(1).values, rtol=1e-5, atol=1e-6)
    assert index.dtype == torch.int64 and sqdist.dtype == torch.float32


def test_vq_update_ref_weighted_means_and_empty_clusters():
    x = torch.tensor([[0.0, 0.0], [2.0, 4.0], [10.0, 10.0]])
    index = torch.tensor([0, 0, 2])
    old = torch.full((4, 2), 7.0)
    c, n = fc.vq_update_ref(x, index, 4, torch.tensor([1.0, 3.0, 2.0]), codebook=old)
    assert torch.equal(c, torch.tensor([[1.5, 3.0], [7.0, 7.0], [10.0, 10.0], [7.0, 7.0]]))
    assert torch.equal(n, torch.tensor([4.0, 0.0, 2.0, 0.0]))
    c0, n0 = fc.vq_update_ref(x, index, 4)
    assert torch.equal(c0[1], torch.zeros(2)) and torch.equal(n0, torch.tensor([2.0, 0.0, 1.0, 0.0]))


def test_bad_arguments_raise():
    x = _rand(4, 3)
    with pytest.raises(ValueError):
        fc.fake_quantize(x, torch.ones(2), torch.zeros(2), 0, 15, 1)
    with pytest.raises(ValueError):
        fc.fake_quantize(x, torch.ones(1), torch.zeros(1), 5, 1, None)
    with pytest.raises(ValueError):
        fc.vq_assign(x, _rand(5, 2))
    with pytest.raises(ValueError):
        fc.vq_update(x, torch.zeros(3, dtype=torch.long), 2)


# ---------------------------------------------------------------- dispatch


def test_ops_on_cpu_run_the_references_with_their_gradients(monkeypatch):
    def refuse(name):
        raise AssertionError("a CPU call must not reach the Triton kernels")

    monkeypatch.setattr("fieldpress.cuda.fake_quant.kernels", refuse)
    monkeypatch.setattr("fieldpress.cuda.vq.kernels", refuse)
    monkeypatch.setattr("fieldpress.cuda.hashgrid_op.kernels", refuse)
    x = _rand(6, 5, seed=6)
    scale, zp, qmin, qmax = _qparams(x, 3, 1)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, ra = fc.fake_quantize_with_rate(a, scale, zp, qmin, qmax, 1)
    yb, rb = fc.fake_quantize_with_rate_ref(b, scale, zp, qmin, qmax, 1)
    ((ya * x).sum() + 0.1 * ra).backward()
    ((yb * x).sum() + 0.1 * rb).backward()
    assert torch.equal(ya, yb) and torch.equal(ra, rb) and torch.equal(a.grad, b.grad)

    pts, cb = _rand(30, 4, seed=7).requires_grad_(), _rand(9, 4, seed=8).requires_grad_()
    i1, d1 = fc.vq_assign(pts, cb)
    g1 = torch.autograd.grad(d1.sum(), [pts, cb])
    i2, d2 = fc.vq_assign_ref(pts, cb)
    g2 = torch.autograd.grad(d2.sum(), [pts, cb])
    assert torch.equal(i1, i2) and torch.equal(d1, d2)
    assert all(torch.allclose(p, q, atol=1e-6) for p, q in zip(g1, g2))

    w, old = torch.rand(30).requires_grad_(), _rand(11, 4, seed=9).requires_grad_()
    c1, n1 = fc.vq_update(pts, i1, 11, w, old)
    h1 = torch.autograd.grad((c1 * c1).sum() + n1.sum(), [pts, w, old])
    c2, n2 = fc.vq_update_ref(pts, i1, 11, w, old)
    h2 = torch.autograd.grad((c2 * c2).sum() + n2.sum(), [pts, w, old])
    assert torch.equal(c1, c2) and torch.equal(n1, n2)
    assert all(torch.allclose(p, q, rtol=1e-5, atol=1e-6) for p, q in zip(h1, h2))


def test_kernel_mode_env(monkeypatch):
    monkeypatch.setenv("FIELDPRESS_KERNELS", "ref")
    assert not _backend.use_triton(torch.zeros(1))
    monkeypatch.setenv("FIELDPRESS_KERNELS", "auto")
    assert not _backend.use_triton(torch.zeros(1))  # CPU tensors take the reference
    monkeypatch.setenv("FIELDPRESS_KERNELS", "fast")
    with pytest.raises(ValueError):
        _backend.kernel_mode()


def test_package_works_without_triton():
    code = textwrap.dedent(
        """
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "triton" or name.startswith("triton."):
                    raise ImportError("triton blocked")
        sys.meta_path.insert(0, Block())
        import torch, fieldpress.cuda as fc
        from fieldpress.cuda import _backend
        assert not _backend.triton_available()
        x = torch.randn(8, 3, requires_grad=True)
        y = fc.fake_quantize(x, torch.tensor(0.1), torch.tensor(0.0), -8, 7, None)
        y.sum().backward()
        i, d = fc.vq_assign(x.detach(), torch.randn(4, 3))
        c, n = fc.vq_update(x.detach(), i, 4)
        assert "triton" not in sys.modules
        print("ok")
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("FIELDPRESS_KERNELS", "TRITON_INTERPRET")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


def test_torch_compile_keeps_each_op_one_node():
    spec = HashGridSpec.from_config({"n_levels": 3, "log2_hashmap_size": 6, "base_resolution": 4}, 2)
    params = (init_hashgrid_params(spec, torch.Generator().manual_seed(0)) * 1e3).requires_grad_()
    x = torch.rand(20, 2, generator=torch.Generator().manual_seed(1))
    cb = _rand(5, 6, seed=10)

    def fn(x, params):
        feats = fc.hashgrid(x, params, spec)
        q, bits = fc.fake_quantize_with_rate(feats, torch.tensor(1e-3), torch.tensor(128.0), 0, 255, None)
        _, d = fc.vq_assign(q, cb)
        return d.sum() + 1e-3 * bits

    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    expected = fn(x, params)
    (g_expected,) = torch.autograd.grad(expected, params)
    got = compiled(x, params)
    (g_got,) = torch.autograd.grad(got, params)
    assert torch.allclose(got, expected) and torch.allclose(g_got, g_expected)


def test_hashgrid_op_cpu_equals_reference():
    spec = HashGridSpec.from_config({"n_levels": 4, "log2_hashmap_size": 7, "base_resolution": 3}, 3)
    params = (init_hashgrid_params(spec, torch.Generator().manual_seed(2)) * 1e4).requires_grad_()
    x = torch.rand(33, 3, generator=torch.Generator().manual_seed(3)).requires_grad_()
    y = fc.hashgrid(x, params, spec)
    ga = torch.autograd.grad((y * y).sum(), [x, params])
    y2 = hashgrid_ref(x, params, spec)
    gb = torch.autograd.grad((y2 * y2).sum(), [x, params])
    assert torch.equal(y, y2)
    assert all(torch.allclose(p, q, rtol=1e-5, atol=1e-6) for p, q in zip(ga, gb))
    assert fc.hashgrid(x.detach(), params.detach(), spec, out_dtype=torch.float16).dtype == torch.float16


# ---------------------------------------------------------------- Triton parity


# Triton's interpreter must be on before triton itself is imported (its standard library is
# @jit code), and anything (torch.compile, for one) may import triton early. So without a GPU
# the parity tests run in a child pytest started with TRITON_INTERPRET=1; the parent skips them.
CHILD = os.environ.get("FIELDPRESS_INTERPRETER_CHILD") == "1"
RUN_TRITON = HAS_CUDA or CHILD
parity = pytest.mark.skipif(
    not RUN_TRITON, reason="runs in the TRITON_INTERPRET=1 child (see test_triton_interpreter)"
)


@pytest.mark.skipif(HAS_CUDA or CHILD, reason="with a GPU the parity tests run the compiled kernels directly")
def test_triton_interpreter():
    """All `parity` tests of this module, in a child process under TRITON_INTERPRET=1 on CPU tensors."""
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "FIELDPRESS_INTERPRETER_CHILD": "1"}
    env.pop("FIELDPRESS_KERNELS", None)
    cmd = [sys.executable, "-m", "pytest", __file__, "-q", "-k", "parity", "-p", "no:cacheprovider", "-x"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=540)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    assert " passed" in out.stdout and "skipped" not in out.stdout, out.stdout[-2000:]


@pytest.fixture(scope="module")
def triton_kernels():
    """Force the Triton path (interpreted in the child process, compiled on a GPU)."""
    pytest.importorskip("triton")
    mp = pytest.MonkeyPatch()
    mp.setenv("FIELDPRESS_KERNELS", "triton")
    from fieldpress.cuda._triton import fake_quant, hashgrid, vq

    if not HAS_CUDA:
        assert type(fake_quant.fq_fwd_kernel).__name__ == "InterpretedFunction"
    yield {"fake_quant": fake_quant, "vq": vq, "hashgrid": hashgrid}
    mp.undo()


FQ_CASES = [
    ((6, 5, 3), 1, 4, False, torch.float32),
    ((40,), None, 8, True, torch.float32),
    ((3, 70), 0, 8, False, torch.float16),
    ((5, 4), 1, 13, False, torch.float32),  # 8192 bins: per-element atomics instead of block histograms
    ((2, 3), None, 2, True, torch.float32),
]


@parity
@pytest.mark.parametrize("shape,axis,bits,symmetric,dtype", FQ_CASES)
def test_fake_quantize_parity(triton_kernels, shape, axis, bits, symmetric, dtype):
    x = _rand(*shape, seed=11) * 2
    ax = None if axis is None else axis % len(shape)
    if ax is not None and len(shape) > 2:
        scale = torch.rand(shape[ax], generator=torch.Generator().manual_seed(1)) * 0.2 + 0.05
        zp, qmin, qmax = torch.full((shape[ax],), float(2 ** (bits - 1))), 0, 2**bits - 1
    else:
        scale, zp, qmin, qmax = _qparams(x, bits, ax, symmetric)
        scale = scale * 0.7  # clip some values so the STE mask matters
    x = x.to(DEVICE, dtype)
    scale, zp = scale.to(DEVICE), zp.to(DEVICE)
    gy = _rand(*shape, seed=12, device=DEVICE, dtype=dtype)
    out = {}
    for name, fn in (("triton", fc.fake_quantize_with_rate), ("ref", fc.fake_quantize_with_rate_ref)):
        if name == "ref":
            os.environ["FIELDPRESS_KERNELS"] = "ref"
        xi = x.clone().requires_grad_()
        y, bits_ = fn(xi, scale, zp, qmin, qmax, axis)
        ((y.float() * gy.float()).sum() + 0.05 * bits_).backward()
        plain = fc.fake_quantize(x, scale, zp, qmin, qmax, axis)
        out[name] = (y, bits_, xi.grad, plain)
        os.environ["FIELDPRESS_KERNELS"] = "triton"
    (yt, bt, gt, pt), (yr, br, gr, pr) = out["triton"], out["ref"]
    assert yt.dtype == dtype and torch.equal(yt, yr) and torch.equal(pt, pr)
    assert bt.item() == pytest.approx(br.item(), rel=1e-6, abs=1e-6)
    assert torch.allclose(gt.float(), gr.float(), rtol=1e-4, atol=1e-4)


@parity
def test_fake_quantize_plain_backward_parity(triton_kernels):
    x = (_rand(7, 9, seed=13) * 3).to(DEVICE).requires_grad_()
    scale, zp, qmin, qmax = torch.tensor(0.1, device=DEVICE), torch.tensor(0.0, device=DEVICE), -8, 7
    (g1,) = torch.autograd.grad(fc.fake_quantize(x, scale, zp, qmin, qmax, None).sum(), x)
    (g2,) = torch.autograd.grad(fc.fake_quantize_ref(x, scale, zp, qmin, qmax, None).sum(), x)
    assert torch.equal(g1, g2) and 0 < g1.sum() < g1.numel()


@parity
@pytest.mark.parametrize("n,k,d", [(37, 20, 5), (70, 90, 48), (5, 1, 3)])
def test_vq_assign_parity(triton_kernels, n, k, d):
    x = _rand(n, d, seed=14, device=DEVICE).requires_grad_()
    cb = _rand(k, d, seed=15, device=DEVICE).requires_grad_()
    index, sqdist = fc.vq_assign(x, cb)
    ga = torch.autograd.grad(sqdist.sum(), [x, cb])
    ri, rd = fc.vq_assign_ref(x, cb, budget=64)
    gb = torch.autograd.grad(rd.sum(), [x, cb])
    full = torch.cdist(x.detach().double(), cb.detach().double()) ** 2
    top2 = full.topk(min(2, k), dim=1, largest=False).values
    clear = (top2[:, -1] - top2[:, 0] > 1e-3) if k > 1 else torch.ones(n, dtype=torch.bool, device=DEVICE)
    assert torch.equal(index[clear], ri[clear])
    assert torch.allclose(sqdist.double(), full.min(1).values, rtol=1e-4, atol=1e-5)
    if torch.equal(index, ri):
        assert all(torch.allclose(p, q, rtol=1e-5, atol=1e-5) for p, q in zip(ga, gb))


@parity
@pytest.mark.parametrize("weighted,with_codebook", [(True, True), (False, False)])
def test_vq_update_parity(triton_kernels, weighted, with_codebook):
    n, k, d = 60, 13, 7
    x = _rand(n, d, seed=16, device=DEVICE).requires_grad_()
    index = torch.randint(0, k - 3, (n,), generator=torch.Generator().manual_seed(0)).to(DEVICE)
    w = (
        torch.rand(n, generator=torch.Generator().manual_seed(1)).to(DEVICE).requires_grad_()
        if weighted
        else None
    )
    old = _rand(k, d, seed=17, device=DEVICE).requires_grad_() if with_codebook else None
    inputs = [t for t in (x, w, old) if t is not None]
    c1, n1 = fc.vq_update(x, index, k, w, old)
    g1 = torch.autograd.grad((c1 * c1).sum() + n1.sum(), inputs, allow_unused=True)
    c2, n2 = fc.vq_update_ref(x, index, k, w, old)
    g2 = torch.autograd.grad((c2 * c2).sum() + n2.sum(), inputs, allow_unused=True)
    assert torch.allclose(c1, c2, rtol=1e-5, atol=1e-6) and torch.allclose(n1, n2, rtol=1e-6)
    assert (n1[k - 3 :] == 0).all()
    for p, q in zip(g1, g2):
        assert (p is None) == (q is None)
        if p is not None:
            assert torch.allclose(p, q, rtol=1e-4, atol=1e-5)


HG_CASES = [
    (1, "Linear", {"log2_hashmap_size": 3}),  # 1-D with hashed levels
    (2, "Linear", {}),
    (2, "Smoothstep", {}),
    (3, "Linear", {"n_features_per_level": 4}),
    (3, "Nearest", {}),
]


@parity
@pytest.mark.parametrize("d,interp,extra", HG_CASES)
def test_hashgrid_parity(triton_kernels, d, interp, extra):
    cfg = {
        "n_levels": 4,
        "n_features_per_level": 2,
        "log2_hashmap_size": 5,
        "base_resolution": 3,
        "per_level_scale": 1.8,
        "interpolation": interp,
        **extra,
    }
    spec = HashGridSpec.from_config(cfg, d)
    assert any(spec.hashed) and not all(spec.hashed)
    params = (init_hashgrid_params(spec, torch.Generator().manual_seed(3)) * 1e4).to(DEVICE).requires_grad_()
    x = torch.rand(40, d, generator=torch.Generator().manual_seed(4)).to(DEVICE)
    x[0] = 0.0
    x[1] = 1.0
    x.requires_grad_()
    y = fc.hashgrid(x, params, spec)
    gy = _rand(*y.shape, seed=18, device=DEVICE)
    ga = torch.autograd.grad((y * gy).sum(), [x, params], allow_unused=True)
    yr = hashgrid_ref(x, params, spec)
    gb = torch.autograd.grad((yr * gy).sum(), [x, params], allow_unused=True)
    assert torch.allclose(y, yr, rtol=1e-6, atol=1e-6)
    assert torch.allclose(ga[1], gb[1], rtol=1e-5, atol=1e-5)
    gx_ref = gb[0] if gb[0] is not None else torch.zeros_like(x)
    assert torch.allclose(ga[0], gx_ref, rtol=1e-4, atol=1e-3)
    half = fc.hashgrid(x.detach(), params.detach(), spec, out_dtype=torch.float16)
    assert half.dtype == torch.float16 and torch.equal(half, yr.detach().half())
