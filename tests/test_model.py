from __future__ import annotations

import threading

import numpy as np
import pytest

import reference as ref
from tinydancer.errors import ConfigError, InvalidInputError
from tinydancer.model import FastGRNN, FastGRNNConfig, magnitude_mask, quantize_rows

# Quantization tolerance stated in the README: outputs of a quantized model within 0.02 of the float model
# for weights of the scale training produces and inputs of unit scale.
QUANT_TOLERANCE = 0.02


def reference_outputs(model: FastGRNN, X: np.ndarray) -> np.ndarray:
    p = model.parameters()
    out = [ref.fastgrnn(x, p["W"], p["U"], p["b_z"], p["b_h"], p["w_out"], p["b_out"], float(p["zeta"]),
                        float(p["nu"])) for x in X]
    return np.array(out).squeeze(-1) if model.config.output_dim == 1 else np.array(out)


def trained_like(config: FastGRNNConfig, seed: int = 0) -> FastGRNN:
    """A model with weights of the size training produces (not the tiny initial ones)."""
    model = FastGRNN(config, seed=seed)
    rng = np.random.default_rng(seed)
    w = model.weights()
    for name in w:
        if w[name].ndim:
            w[name] = (rng.standard_normal(w[name].shape) * 0.7).astype(np.float32)
    model.set_weights(w)
    return model


@pytest.mark.parametrize(
    "config",
    [FastGRNNConfig(), FastGRNNConfig(timesteps=3), FastGRNNConfig(input_dim=20, hidden_dim=16, output_dim=3),
     FastGRNNConfig(w_rank=3, u_rank=4), FastGRNNConfig(input_dim=384, hidden_dim=32, w_rank=8)],
)
def test_forward_matches_reference(isa, config):
    model = trained_like(config)
    rng = np.random.default_rng(1)
    shape = (20, config.input_dim) if config.timesteps == 1 else (20, config.timesteps, config.input_dim)
    X = rng.standard_normal(shape).astype(np.float32)
    expected = reference_outputs(model, X)
    np.testing.assert_allclose(model.forward_batch(X), expected, atol=1e-5)
    single = model.forward(X[0])
    np.testing.assert_allclose(single, expected[0], atol=1e-5)


def test_defaults_and_seeded_init():
    a, b, c = FastGRNN(seed=3), FastGRNN(seed=3), FastGRNN(seed=4)
    assert a.config == FastGRNNConfig(input_dim=5, hidden_dim=8, output_dim=1, timesteps=1, nu=-4.0, zeta=1.0)
    for key, value in a.parameters().items():
        np.testing.assert_array_equal(value, b.parameters()[key])
    assert not np.array_equal(a.parameters()["W"], c.parameters()["W"])
    p = a.parameters()
    assert set(p) == {"W", "U", "b_z", "b_h", "w_out", "b_out", "zeta", "nu"}
    assert all(v.dtype == np.float32 for v in p.values())
    assert float(p["zeta"]) == 1.0 and float(p["nu"]) == -4.0
    assert p["W"].shape == (8, 5) and p["U"].shape == (8, 8) and p["w_out"].shape == (1, 8)
    assert not a.is_quantized and not a.is_sparse and a.sparsity == 0.0


@pytest.mark.parametrize(
    "kwargs",
    [dict(input_dim=0), dict(hidden_dim=-1), dict(hidden_dim=2000), dict(timesteps=1.5), dict(output_dim=True),
     dict(nu=float("nan")), dict(zeta="1"), dict(w_rank=6), dict(u_rank=0), dict(w_rank=2.0)],
)
def test_bad_config(kwargs):
    with pytest.raises(ConfigError):
        FastGRNNConfig(**kwargs)


def test_config_dict_round_trip():
    c = FastGRNNConfig(input_dim=7, w_rank=2)
    assert FastGRNNConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError, match="unknown FastGRNN config keys"):
        FastGRNNConfig.from_dict({**c.to_dict(), "rank": 4})


def test_quantize_really_converts_to_int8(isa):
    model = trained_like(FastGRNNConfig(timesteps=2))
    X = np.random.default_rng(2).standard_normal((200, 2, 5)).astype(np.float32)
    before = model.forward_batch(X)
    dense_bytes = model.size_bytes()
    assert model.quantize() is model
    assert model.is_quantized and model.cell.W.kind == "int8" and model.cell.U.kind == "int8"
    # The stored weights are int8 with per-row float scales, exactly what the kernels read.
    q, scales = model.cell.W.arrays()
    assert q.dtype == np.int8 and scales.dtype == np.float32 and scales.shape == (8,)
    assert np.abs(q).max() == 127
    np.testing.assert_allclose(model.forward_batch(X), reference_outputs(model, X), atol=1e-5)
    assert np.max(np.abs(model.forward_batch(X) - before)) < QUANT_TOLERANCE
    # 4 bytes -> 1 byte per weight, plus a float scale per row.
    assert dense_bytes - model.size_bytes() == (40 + 64) * 3 - 2 * 8 * 4
    model.quantize()
    assert model.cell.W.kind == "int8"


def test_quantize_rows():
    m = np.array([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0]], np.float32)
    q, s = quantize_rows(m)
    np.testing.assert_array_equal(q, [[64, -127, 32], [0, 0, 0]])
    np.testing.assert_allclose(s, [1.0 / 127.0, 1.0])


def test_sparse_quantization_follows_the_dense_rule():
    model = trained_like(FastGRNNConfig(hidden_dim=16)).prune(0.6)
    pruned = model.parameters()
    model.quantize()
    for name, matrix in (("W", model.cell.W), ("U", model.cell.U)):
        q, scales = quantize_rows(pruned[name])
        values, indices, indptr, stored_scales = matrix.arrays()
        rows = np.repeat(np.arange(16), np.diff(indptr))
        np.testing.assert_array_equal(values, q[rows, indices])
        np.testing.assert_array_equal(stored_scales, scales)


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.9])
def test_prune_stores_csr_and_zeroes_the_smallest(isa, sparsity):
    model = trained_like(FastGRNNConfig(hidden_dim=16, timesteps=2))
    dense = model.parameters()
    X = np.random.default_rng(3).standard_normal((50, 2, 5)).astype(np.float32)
    model.prune(sparsity)
    assert model.is_sparse and model.cell.W.kind == "sparse" and not model.is_quantized
    p = model.parameters()
    for name in ("W", "U"):
        kept = p[name] != 0
        assert kept.sum() == dense[name].size - round(sparsity * dense[name].size)
        np.testing.assert_array_equal(p[name][kept], dense[name][kept])  # survivors keep their values
        if 0 < kept.sum() < kept.size:
            assert np.abs(dense[name][~kept]).max() <= np.abs(dense[name][kept]).min()
    assert model.sparsity == pytest.approx(sparsity, abs=0.01)
    np.testing.assert_allclose(model.forward_batch(X), reference_outputs(model, X), atol=1e-5)


def test_prune_then_quantize_and_quantize_then_prune(isa):
    a = trained_like(FastGRNNConfig(hidden_dim=16))
    b = trained_like(FastGRNNConfig(hidden_dim=16))
    a.prune(0.9).quantize()
    b.quantize().prune(0.9)
    X = np.random.default_rng(4).standard_normal((50, 5)).astype(np.float32)
    for m in (a, b):
        assert m.cell.W.kind == "sparse_int8" and m.cell.U.kind == "sparse_int8"
        assert m.is_quantized and m.is_sparse
        assert m.sparsity == pytest.approx(0.9, abs=0.01)
        np.testing.assert_allclose(m.forward_batch(X), reference_outputs(m, X), atol=1e-5)


def test_size_bytes_is_what_is_stored():
    model = trained_like(FastGRNNConfig(hidden_dim=16))
    h, i = 16, 5
    rest = (2 * h + h + 1) * 4 + 8  # b_z, b_h, w_out, b_out, zeta and nu
    assert model.size_bytes() == (h * i + h * h) * 4 + rest
    model.prune(0.75)
    nnz_w, nnz_u = round(0.25 * h * i), round(0.25 * h * h)
    csr = (nnz_w + nnz_u) * (4 + 4) + 2 * (h + 1) * 4
    assert model.size_bytes() == csr + rest
    model.quantize()
    assert model.size_bytes() == (nnz_w + nnz_u) * (1 + 4) + 2 * (h + 1) * 4 + 2 * h * 4 + rest
    low = FastGRNN(FastGRNNConfig(w_rank=2, u_rank=3))
    assert low.size_bytes() == (8 * 2 + 2 * 5 + 8 * 3 + 3 * 8) * 4 + (2 * 8 + 8 + 1) * 4 + 8


def test_low_rank_weights_and_parameters():
    model = FastGRNN(FastGRNNConfig(w_rank=2, u_rank=3), seed=5)
    w = model.weights()
    assert {"W1", "W2", "U1", "U2"} <= set(w) and "W" not in w
    p = model.parameters()
    np.testing.assert_allclose(p["W"], w["W1"].astype(np.float64) @ w["W2"], atol=1e-6)
    model.quantize()  # a low-rank product is multiplied out, then quantized
    assert model.cell.W.kind == "int8" and "W" in model.weights()


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), "0.5", True])
def test_bad_sparsity(bad):
    with pytest.raises(InvalidInputError, match="sparsity"):
        FastGRNN().prune(bad)


def test_set_weights_errors():
    model = FastGRNN()
    w = model.weights()
    with pytest.raises(InvalidInputError, match="missing"):
        model.set_weights({"W": w["W"], "U": w["U"]})
    with pytest.raises(InvalidInputError, match="W has shape"):
        model.set_weights({**w, "W": np.zeros((8, 4), np.float32)})
    with pytest.raises(InvalidInputError, match="holds a non-finite"):
        model.set_weights({**w, "b_z": np.full(8, np.nan, np.float32)})


def test_magnitude_mask_is_deterministic_with_ties():
    m = np.array([[1.0, 1.0, 1.0, 2.0]])
    np.testing.assert_array_equal(magnitude_mask(m, 0.5), [[False, False, True, True]])


def test_compression_swaps_atomically_under_concurrent_inference():
    model = trained_like(FastGRNNConfig(hidden_dim=16))
    X = np.random.default_rng(6).standard_normal((64, 5)).astype(np.float32)
    allowed = [model.forward_batch(X)]
    stop = threading.Event()
    seen: list[np.ndarray] = []

    def reader() -> None:
        while not stop.is_set():
            seen.append(model.forward_batch(X))

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    model.prune(0.5)
    allowed.append(model.forward_batch(X))
    model.quantize()
    allowed.append(model.forward_batch(X))
    stop.set()
    for t in threads:
        t.join()
    assert seen
    for out in seen:  # every result comes wholly from one of the three models
        assert any(np.array_equal(out, a) for a in allowed)
