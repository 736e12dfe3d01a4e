"""Laplace entropy models: integer tables, exact round trips, rate vs coded bytes, fixed-point MLPs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fieldpress.codec import entropy_models as em
from fieldpress.codec.fixed_point import int_mlp, quantize_linear
from fieldpress.errors import FormatError


def _symbols(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    mean = rng.normal(0, 4, n)
    log_scale = rng.uniform(-3, 3, n)
    values = np.clip(np.round(mean + rng.laplace(0, np.exp(log_scale))), -64, 63).astype(np.int64)
    return mean, log_scale, values


def test_tables_are_valid_integer_pmfs():
    t = em.tables()
    assert t.shape == (em.N_TABLES, em.ALPHABET)
    assert (t >= 1).all() and (t.sum(axis=1) == em.TOTAL).all()


def test_round_trip_is_exact():
    mean, log_scale, values = _symbols(20_000)
    centre, table = em.param_indices(em.to_fixed(mean), em.to_fixed(log_scale))
    enc = em.new_encoder()
    em.encode_symbols(enc, values, centre, table)
    out = em.decode_symbols(em.new_decoder(em.finish(enc)), centre, table)
    assert np.array_equal(out, values)


def test_reported_rate_matches_coded_bytes_within_one_percent():
    mean, log_scale, values = _symbols(300_000, seed=1)  # a Kodak-sized latent pyramid
    centre, table = em.param_indices(em.to_fixed(mean), em.to_fixed(log_scale))
    model_bits = em.table_bits(values, centre, table)
    enc = em.new_encoder()
    em.encode_symbols(enc, values, centre, table)
    coded_bits = em.finish(enc).size * 32
    assert abs(coded_bits / model_bits - 1) < 0.01
    train_bits = float(em.laplace_bits(torch.tensor(values, dtype=torch.float64), torch.tensor(mean),
                                       torch.tensor(log_scale)).sum())
    assert abs(train_bits / model_bits - 1) < 0.01  # the training rate predicts the file too


def test_param_indices_are_integer_only_and_in_range():
    m = np.arange(-20000, 20000, 37)
    c, t = em.param_indices(m, -m // 7)
    assert c.dtype == np.int64 and t.min() >= 0 and t.max() < em.N_TABLES
    frac = m - c * em.ONE
    assert frac.min() >= -em.ONE // 2 and frac.max() < em.ONE // 2


def test_residual_out_of_range_is_refused():
    with pytest.raises(ValueError):
        em.encode_symbols(em.new_encoder(), np.array([500]), np.array([0]), np.array([0]))


def test_bad_table_index_is_a_format_error():
    with pytest.raises(FormatError):
        em.decode_symbols(em.new_decoder(np.zeros(4, np.uint32)), np.zeros(1, np.int64),
                          np.array([em.N_TABLES]))


def test_factorized_round_trip():
    model = em.FactorizedLaplace(3, init_log_scale=1.0)
    q = np.random.default_rng(2).integers(-20, 20, (3, 50, 7))
    enc = em.new_encoder()
    rows = model.encode(enc, q)
    assert np.array_equal(em.FactorizedLaplace.decode(em.new_decoder(em.finish(enc)), q.shape, rows), q)
    assert float(model.bits(torch.tensor(q, dtype=torch.float32)).detach()) > 0


def _mlp(seed: int) -> list[nn.Linear]:
    torch.manual_seed(seed)
    return [nn.Linear(21, 16), nn.Linear(16, 16), nn.Linear(16, 2)]


def test_fixed_point_mlp_is_exact_and_thread_independent():
    layers = [quantize_linear(layer, 10) for layer in _mlp(0)]
    x = torch.randint(-64, 64, (5000, 21)).double()
    outs = []
    for threads in (1, 2):
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            outs.append(int_mlp(x, layers))
        finally:
            torch.set_num_threads(old)
    assert torch.equal(outs[0], outs[1])
    # the same computation in Python integers (floor division: the reference of the rounding shift)
    xi = x[:50].long().numpy().astype(object)
    h, bits = xi, 0
    for i, layer in enumerate(layers):
        z = h @ layer.weight.astype(object).T + layer.bias.astype(object) * 2**bits
        s = layer.shift + bits - 8
        h = (z + 2 ** (s - 1)) // 2**s if s > 0 else z * 2 ** (-s)
        if i < len(layers) - 1:
            h = np.maximum(h, 0)
        bits = 8
    assert np.array_equal(outs[0][:50].long().numpy(), h.astype(np.int64))


def test_tiny_float_perturbations_give_the_same_tables():
    a, b = _mlp(0), _mlp(0)
    with torch.no_grad():
        for layer in b:
            layer.weight.add_(torch.randn_like(layer.weight) * 1e-9)
    x = torch.randint(-64, 64, (4000, 21)).double()
    rows = []
    for net in (a, b):
        out = int_mlp(x, [quantize_linear(layer, 8) for layer in net]).long().numpy()
        rows.append(em.param_indices(out[:, 0], out[:, 1]))
    assert np.array_equal(rows[0][0], rows[1][0]) and np.array_equal(rows[0][1], rows[1][1])


def test_fixed_point_overflow_is_refused():
    layers = [quantize_linear(nn.Linear(2, 2), 30)]
    with pytest.raises(FormatError):
        int_mlp(torch.full((3, 2), 2.0**30, dtype=torch.float64), layers)
