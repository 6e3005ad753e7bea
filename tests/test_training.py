from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pytest

import reference as ref
from tinydancer.errors import ConfigError, InvalidInputError
from tinydancer.model import FastGRNN, FastGRNNConfig
from tinydancer.model import magnitude_mask
from tinydancer.training import (
    CompressionReport,
    StageReport,
    Trainer,
    TrainingConfig,
    TrainingDataWarning,
    TrainingMetrics,
    compress,
    evaluate,
)
from tinydancer.training.bptt import forward, loss_and_gradients
from tinydancer.training.compression import counted_sparsity, stage_epochs
from tinydancer.training.metrics import roc_auc
from tinydancer.training.trainer import clip_by_global_norm

# --------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------


def easy_task(rng: np.random.Generator, n: int, timesteps: int = 1):
    """label = feature0 + feature1 > 0.8 (T = 1), or the time-mean of f0 + f1 > 1.0 (T > 1)."""
    if timesteps == 1:
        X = rng.random((n, 5))
        return X, (X[:, 0] + X[:, 1] > 0.8).astype(np.float64)
    X = rng.random((n, timesteps, 5))
    return X, ((X[:, :, 0] + X[:, :, 1]).mean(axis=1) > 1.0).astype(np.float64)


def three_classes(rng: np.random.Generator, n: int):
    X = rng.uniform(-1.0, 1.0, (n, 5))
    return X, np.argmax(X[:, :3], axis=1)


def numpy_probs(weights: dict, X: np.ndarray) -> np.ndarray:
    """Probabilities from the float64 NumPy forward pass of the training module."""
    params = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
    X = np.asarray(X, dtype=np.float64)
    logits, _ = forward(params, X[:, None, :] if X.ndim == 2 else X, keep_cache=False)
    if logits.shape[1] == 1:
        return ref.sigmoid(logits[:, 0])
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def random_weights(rng: np.random.Generator, inputs: int, hidden: int, outputs: int, low_rank: bool) -> dict:
    w: dict[str, np.ndarray] = {}
    if low_rank:
        w["W1"], w["W2"] = rng.standard_normal((hidden, 2)) * 0.6, rng.standard_normal((2, inputs)) * 0.6
        w["U1"], w["U2"] = rng.standard_normal((hidden, 2)) * 0.6, rng.standard_normal((2, hidden)) * 0.6
    else:
        w["W"], w["U"] = rng.standard_normal((hidden, inputs)) * 0.6, rng.standard_normal((hidden, hidden)) * 0.6
    w.update(b_z=rng.standard_normal(hidden), b_h=rng.standard_normal(hidden),
             w_out=rng.standard_normal((outputs, hidden)), b_out=rng.standard_normal(outputs),
             zeta=np.array(0.4), nu=np.array(-0.8))
    return w


def fast_config(**changes) -> TrainingConfig:
    base = dict(learning_rate=0.02, batch_size=32, epochs=20, early_stopping_patience=None, seed=3)
    base.update(changes)
    return TrainingConfig(**base)


# --------------------------------------------------------------------------------------------------------
# Gradients against finite differences
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("low_rank", [False, True], ids=["dense", "low_rank"])
@pytest.mark.parametrize("timesteps", [1, 3])
@pytest.mark.parametrize("outputs", [1, 3])
@pytest.mark.parametrize("soft,temperature", [(False, 1.0), (True, 1.0), (True, 3.0)],
                         ids=["hard", "distill_T1", "distill_T3"])
def test_gradients_match_finite_differences(rng, low_rank, timesteps, outputs, soft, temperature):
    n, inputs, hidden = 6, 3, 4
    weights = random_weights(rng, inputs, hidden, outputs, low_rank)
    X = rng.standard_normal((n, timesteps, inputs))
    y = rng.random(n) if outputs == 1 else rng.integers(0, outputs, n)
    q = None
    if soft:
        q = rng.random(n) if outputs == 1 else rng.dirichlet(np.ones(outputs), n)
    kw = dict(temperature=temperature, alpha=0.3, l2_reg=0.05)
    _, grads = loss_and_gradients(weights, X, y, q, **kw)
    assert set(grads) == set(weights)
    step = 1e-6
    for name, value in weights.items():
        fd = np.zeros(np.shape(value))
        for idx in np.ndindex(np.shape(value)):
            plus = {k: np.array(v, dtype=np.float64) for k, v in weights.items()}
            minus = {k: np.array(v, dtype=np.float64) for k, v in weights.items()}
            plus[name][idx] += step
            minus[name][idx] -= step
            fd[idx] = (loss_and_gradients(plus, X, y, q, **kw)[0]
                       - loss_and_gradients(minus, X, y, q, **kw)[0]) / (2 * step)
        assert grads[name].shape == fd.shape
        rel = np.linalg.norm(grads[name] - fd) / max(np.linalg.norm(grads[name]) + np.linalg.norm(fd), 1e-12)
        assert rel < 1e-5, (name, rel)


def test_loss_matches_the_equations(rng):
    """T = 1 distillation is alpha * BCE(p, soft) + (1 - alpha) * BCE(p, hard) + the L2 term, with p from
    the reference forward pass; softmax is cross-entropy."""
    weights = random_weights(rng, 3, 4, 1, low_rank=False)
    X = rng.standard_normal((7, 2, 3))
    y, q = rng.random(7), rng.uniform(0.05, 0.95, 7)
    p = np.array([ref.fastgrnn(x, weights["W"], weights["U"], weights["b_z"], weights["b_h"], weights["w_out"],
                               weights["b_out"], float(weights["zeta"]), float(weights["nu"]))[0] for x in X])

    def bce(t):
        return np.mean(-(t * np.log(p) + (1 - t) * np.log(1 - p)))

    l2 = 0.1
    penalty = 0.5 * l2 * sum(np.sum(weights[k] ** 2) for k in ("W", "U", "w_out"))
    loss, _ = loss_and_gradients(weights, X, y, q, temperature=1.0, alpha=0.25, l2_reg=l2)
    assert loss == pytest.approx(0.25 * bce(q) + 0.75 * bce(y) + penalty, rel=1e-6)
    loss, _ = loss_and_gradients(weights, X, y)
    assert loss == pytest.approx(bce(y), rel=1e-9)

    w3 = random_weights(rng, 3, 4, 3, low_rank=False)
    classes = rng.integers(0, 3, 7)
    P = np.array([ref.fastgrnn(x, w3["W"], w3["U"], w3["b_z"], w3["b_h"], w3["w_out"], w3["b_out"],
                               float(w3["zeta"]), float(w3["nu"])) for x in X])
    loss, _ = loss_and_gradients(w3, X, classes)
    assert loss == pytest.approx(np.mean(-np.log(P[np.arange(7), classes])), rel=1e-9)


# --------------------------------------------------------------------------------------------------------
# Convergence, and the C kernels agree with the NumPy forward after training
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("timesteps", [1, 3])
def test_converges_on_a_known_rule(rng, timesteps):
    X, y = easy_task(rng, 3000, timesteps)
    X_test, y_test = easy_task(rng, 1000, timesteps)
    model = FastGRNN(FastGRNNConfig(input_dim=5, hidden_dim=8, timesteps=timesteps), seed=1)
    history = Trainer(model, fast_config(epochs=25)).fit(X, y)
    assert len(history) == 25
    assert all(isinstance(m, TrainingMetrics) for m in history)
    assert history[-1].train_loss < history[0].train_loss
    result = evaluate(model, X_test, y_test)
    assert result["accuracy"] > 0.95
    assert result["auc"] > 0.98
    kernel = model.forward_batch(X_test.astype(np.float32))
    np.testing.assert_allclose(kernel, numpy_probs(model.weights(), X_test.astype(np.float32)), atol=1e-5, rtol=0)


def test_converges_softmax_three_classes(rng):
    X, y = three_classes(rng, 3000)
    X_test, y_test = three_classes(rng, 1000)
    model = FastGRNN(FastGRNNConfig(input_dim=5, hidden_dim=8, output_dim=3), seed=1)
    Trainer(model, fast_config(epochs=30)).fit(X, y)
    result = evaluate(model, X_test, y_test)
    assert result["accuracy"] > 0.95
    assert result["auc"] is None
    kernel = model.forward_batch(X_test.astype(np.float32))
    np.testing.assert_allclose(kernel, numpy_probs(model.weights(), X_test.astype(np.float32)), atol=1e-5, rtol=0)


def test_low_rank_model_trains_in_factored_form(rng):
    X, y = easy_task(rng, 1500, 2)
    model = FastGRNN(FastGRNNConfig(input_dim=5, hidden_dim=8, timesteps=2, w_rank=3, u_rank=4), seed=2)
    before = model.weights()
    Trainer(model, fast_config(epochs=25)).fit(X, y)
    after = model.weights()
    assert set(after) == set(before) and "W1" in after and "U2" in after
    assert model.cell.W.kind == "low_rank" and model.cell.U.kind == "low_rank"
    assert not np.array_equal(after["W1"], before["W1"])
    assert float(after["zeta"]) != float(before["zeta"]) and float(after["nu"]) != float(before["nu"])
    assert evaluate(model, *easy_task(rng, 500, 2))["accuracy"] > 0.9
    X_test = easy_task(rng, 200, 2)[0].astype(np.float32)
    np.testing.assert_allclose(model.forward_batch(X_test), numpy_probs(after, X_test), atol=1e-5, rtol=0)


# --------------------------------------------------------------------------------------------------------
# Reproducibility, early stopping, learning-rate decay, clipping, masks, callback
# --------------------------------------------------------------------------------------------------------


def test_same_seed_same_weights_other_seed_other_weights(rng):
    X, y = easy_task(rng, 600)

    def train(seed):
        model = FastGRNN(FastGRNNConfig(), seed=0)
        Trainer(model, fast_config(epochs=3, seed=seed)).fit(X, y)
        return model.weights()

    a, b, c = train(11), train(11), train(12)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], c[k]) for k in a)


def test_early_stopping_restores_the_best_weights(rng):
    # trained on one rule, validated on a related one: validation loss falls, then rises
    X = rng.random((300, 5))
    y = (X[:, 0] > 0.5).astype(float)
    X_val = rng.random((300, 5))
    y_val = (X_val[:, 0] + X_val[:, 1] > 1.0).astype(float)
    model = FastGRNN(FastGRNNConfig(), seed=0)
    cfg = fast_config(learning_rate=0.02, epochs=200, early_stopping_patience=3, l2_reg=0.0)
    history = Trainer(model, cfg).fit(X, y, X_val=X_val, y_val=y_val)
    val = [m.val_loss for m in history]
    best = int(np.argmin(val))
    assert best > 0
    assert len(history) < 200
    assert len(history) == best + 1 + 3
    assert val[-1] > val[best]
    p = numpy_probs(model.weights(), X_val)
    restored = np.mean(-(y_val * np.log(p) + (1 - y_val) * np.log(1 - p)))
    assert restored == pytest.approx(val[best], rel=1e-4)
    assert evaluate(model, X_val, y_val)["loss"] == pytest.approx(val[best], rel=1e-4)


def test_learning_rate_decays_at_the_configured_epochs(rng):
    X, y = easy_task(rng, 200)
    model = FastGRNN(FastGRNNConfig(), seed=0)
    history = Trainer(model, fast_config(learning_rate=0.01, epochs=7, lr_decay=0.5, lr_decay_step=3)).fit(X, y)
    assert [m.epoch for m in history] == list(range(7))
    assert [m.learning_rate for m in history] == pytest.approx([0.01] * 3 + [0.005] * 3 + [0.0025])


def test_clip_by_global_norm():
    g = np.array([3.0, 4.0, 0.0])
    clipped, norm = clip_by_global_norm(g, 1.0)
    assert norm == pytest.approx(5.0)
    np.testing.assert_allclose(clipped, [0.6, 0.8, 0.0])
    assert np.linalg.norm(clipped) == pytest.approx(1.0)
    assert clip_by_global_norm(g, 10.0)[0] is g
    assert clip_by_global_norm(g, 0.0)[0] is g  # 0 disables clipping


def test_masks_keep_zeros_at_zero(rng):
    X, y = easy_task(rng, 500, timesteps=2)  # with one timestep U would not train at all
    model = FastGRNN(FastGRNNConfig(timesteps=2), seed=0)
    before = model.weights()
    masks = {"W": rng.random((8, 5)) < 0.5, "U": rng.random((8, 8)) < 0.3}
    Trainer(model, fast_config(epochs=5)).fit(X, y, masks=masks)
    after = model.weights()
    for name, mask in masks.items():
        assert np.all(after[name][~mask] == 0.0)
        assert np.all(after[name][mask] != before[name][mask])


def test_projection_runs_after_every_step_and_writes_in_place(rng):
    X, y = easy_task(rng, 100)
    model = FastGRNN(FastGRNNConfig(), seed=0)
    calls: list[int] = []

    def keep_top_fifth(epoch, params):
        calls.append(epoch)
        params["W"] *= magnitude_mask(params["W"], 0.8)

    Trainer(model, fast_config(epochs=3, batch_size=32, validation_split=0.0)).fit(X, y, projection=keep_top_fifth)
    assert calls == [0] * 4 + [1] * 4 + [2] * 4  # 100 examples: 4 steps per epoch
    assert np.count_nonzero(model.weights()["W"]) == 8  # 20% of 8 x 5


def test_projection_may_put_new_arrays(rng):
    X, y = easy_task(rng, 40)
    model = FastGRNN(FastGRNNConfig(), seed=0)
    before = model.weights()

    def fix_bias(epoch, params):
        params["b_out"] = np.array([0.25])

    Trainer(model, fast_config(epochs=2)).fit(X, y, projection=fix_bias)
    assert model.weights()["b_out"][0] == np.float32(0.25)

    def wrong_shape(epoch, params):
        params["W"] = np.zeros((5, 8))

    model = FastGRNN(FastGRNNConfig(), seed=0)
    with pytest.raises(InvalidInputError, match=r"^the projection replaced W of shape \(8, 5\)"):
        Trainer(model, fast_config(epochs=1)).fit(X, y, projection=wrong_shape)
    assert all(np.array_equal(before[k], model.weights()[k]) for k in before)  # untouched
    with pytest.raises(InvalidInputError, match="^projection must be callable"):
        Trainer(model, fast_config(epochs=1)).fit(X, y, projection="W")  # type: ignore[arg-type]


def test_callback_sees_every_epoch_and_can_stop(rng):
    X, y = easy_task(rng, 200)
    seen: list[TrainingMetrics] = []

    def callback(metrics):
        seen.append(metrics)
        return False if metrics.epoch == 2 else None

    history = Trainer(FastGRNN(FastGRNNConfig(), seed=0), fast_config(epochs=10)).fit(X, y, callback=callback)
    assert len(history) == 3 and seen == history
    assert all(m.seconds >= 0 for m in history)


def test_validation_split_zero_validates_on_the_training_set(rng):
    X, y = easy_task(rng, 200)
    history = Trainer(FastGRNN(FastGRNNConfig(), seed=0), fast_config(epochs=2, validation_split=0.0)).fit(X, y)
    assert history[-1].val_accuracy == history[-1].train_accuracy


# --------------------------------------------------------------------------------------------------------
# Distillation
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_distillation_student_approaches_the_teacher(rng, temperature):
    teacher = FastGRNN(FastGRNNConfig(), seed=5)
    w = teacher.weights()
    w["W"] = w["W"] * 10  # spread the teacher's probabilities
    w["w_out"] = w["w_out"] * 10
    teacher.set_weights(w)
    X = rng.uniform(-1, 1, (2000, 5)).astype(np.float32)
    X_test = rng.uniform(-1, 1, (500, 5)).astype(np.float32)
    soft = teacher.forward_batch(X)
    target = teacher.forward_batch(X_test)
    assert soft.std() > 0.1
    student = FastGRNN(FastGRNNConfig(), seed=6)
    gap_before = np.mean(np.abs(student.forward_batch(X_test) - target))
    cfg = fast_config(epochs=40, enable_distillation=True, distillation_alpha=1.0,
                      distillation_temperature=temperature)
    hard = np.zeros(len(X))  # wrong on purpose: alpha = 1 must ignore them
    Trainer(student, cfg).fit(X, hard, soft_targets=soft)
    gap_after = np.mean(np.abs(student.forward_batch(X_test) - target))
    assert gap_after < 0.02 < 0.1 < gap_before


def test_soft_targets_without_distillation_warn(rng):
    X, y = easy_task(rng, 100)
    with pytest.warns(UserWarning, match="enable_distillation"):
        Trainer(FastGRNN(FastGRNNConfig(), seed=0), fast_config(epochs=1)).fit(X, y, soft_targets=y)


# --------------------------------------------------------------------------------------------------------
# evaluate()
# --------------------------------------------------------------------------------------------------------


def test_roc_auc_is_the_pairwise_probability_with_ties():
    rng = np.random.default_rng(4)
    scores = rng.integers(0, 5, 60).astype(float)  # many ties
    positive = rng.random(60) < 0.4
    pos, neg = scores[positive], scores[~positive]
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert roc_auc(scores, positive) == pytest.approx(pairs / (pos.size * neg.size))
    assert math.isnan(roc_auc(scores, np.ones(60, dtype=bool)))


def test_evaluate_uses_the_kernels(rng):
    model = FastGRNN(FastGRNNConfig(), seed=3)
    X, y = easy_task(rng, 300)
    p = model.forward_batch(X.astype(np.float32)).astype(np.float64)
    result = evaluate(model, X, y)
    assert result["n"] == 300
    assert result["loss"] == pytest.approx(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))), rel=1e-6)
    assert result["accuracy"] == pytest.approx(np.mean((p >= 0.5) == (y >= 0.5)))


# --------------------------------------------------------------------------------------------------------
# compress()
# --------------------------------------------------------------------------------------------------------


def test_compress_pipeline(rng):
    # hidden 16 at 80%: big enough that CSR (int32 indices) and per-row int8 scales really save bytes
    X, y = easy_task(rng, 2500)
    X_val, y_val = easy_task(rng, 800)
    model = FastGRNN(FastGRNNConfig(hidden_dim=16), seed=1)
    dense_size = model.size_bytes()
    seen: set[str] = set()
    report = compress(model, X, y, target_sparsity=0.8, config=fast_config(), X_val=X_val, y_val=y_val,
                      dense_epochs=12, iht_epochs=8, retrain_epochs=8,
                      callback=lambda stage, metrics: seen.add(stage))
    assert isinstance(report, CompressionReport)
    assert [s.name for s in report.stages] == ["dense", "iht", "retrain", "prune", "quantize"]
    assert seen == {"dense", "iht", "retrain"}
    assert [len(report.histories[k]) for k in ("dense", "iht", "retrain")] == [12, 8, 8]
    assert all(isinstance(s, StageReport) for s in report.stages)
    assert model.is_sparse and model.is_quantized
    assert model.sparsity == pytest.approx(0.8, abs=0.02)
    assert report.stages[1].sparsity == pytest.approx(0.8, abs=0.01)  # IHT already reached the target
    assert report.stages[2].sparsity == report.stages[1].sparsity  # retraining kept the support
    sizes = [s.size_bytes for s in report.stages]
    assert sizes[0] == sizes[1] == sizes[2] == dense_size  # stored dense while training
    assert sizes[2] > sizes[3] > sizes[4]
    final = report.stages[-1]
    assert final.val_accuracy > 0.9
    assert final.val_loss == pytest.approx(evaluate(model, X_val, y_val)["loss"])
    assert final.val_auc is not None and final.val_auc > 0.95
    table = report.table()
    assert len(table.splitlines()) == 2 + 5 + 1 and "quantize" in table and str(final.size_bytes) in table
    assert report.notes == ("U is unused with one timestep (h0 = 0) and is not counted in the sparsity",)
    assert table.splitlines()[-1] == "note: " + report.notes[0]


def test_compress_low_rank_is_expanded_and_quantize_is_optional(rng):
    X, y = easy_task(rng, 800)
    model = FastGRNN(FastGRNNConfig(w_rank=2, u_rank=2), seed=1)
    cfg = fast_config(epochs=6, validation_split=0.25)
    report = compress(model, X, y, target_sparsity=0.4, config=cfg, quantize=False)
    assert [s.name for s in report.stages] == ["dense", "iht", "retrain", "prune"]
    assert model.is_sparse and not model.is_quantized
    assert set(report.histories) == {"dense", "iht", "retrain"}
    assert all(len(h) == 2 for h in report.histories.values())  # 6 epochs shared out in thirds


# --------------------------------------------------------------------------------------------------------
# Bad settings and bad data
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("field,value", [
    ("learning_rate", 0.0), ("learning_rate", math.nan), ("batch_size", 0), ("batch_size", 2.5),
    ("epochs", 0), ("validation_split", 1.0), ("validation_split", -0.1), ("early_stopping_patience", 0),
    ("lr_decay", 0.0), ("lr_decay", 1.5), ("lr_decay_step", 0), ("grad_clip", -1.0), ("adam_beta1", 1.0),
    ("adam_beta2", -0.1), ("adam_epsilon", 0.0), ("l2_reg", -1e-3), ("enable_distillation", 1),
    ("distillation_temperature", 0.0), ("distillation_alpha", 1.5), ("seed", -1), ("seed", True),
])
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ConfigError, match=field):
        TrainingConfig(**{field: value})


def test_config_defaults_are_the_crates():
    cfg = TrainingConfig()
    assert (cfg.learning_rate, cfg.batch_size, cfg.epochs, cfg.validation_split, cfg.early_stopping_patience,
            cfg.lr_decay, cfg.lr_decay_step, cfg.grad_clip, cfg.adam_beta1, cfg.adam_beta2, cfg.adam_epsilon,
            cfg.l2_reg, cfg.enable_distillation, cfg.distillation_temperature, cfg.distillation_alpha,
            cfg.seed) == (0.001, 32, 100, 0.2, 10, 0.5, 20, 5.0, 0.9, 0.999, 1e-8, 1e-5, False, 3.0, 0.5, None)
    assert TrainingConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown"):
        TrainingConfig.from_dict({"learning_rte": 0.1})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.epochs = 3  # type: ignore[misc]


def _bad_inputs():
    X = np.random.default_rng(0).random((20, 5))
    y = (X[:, 0] > 0.5).astype(float)
    nan_X = X.copy()
    nan_X[3, 2] = np.nan
    inf_X = X.copy()
    inf_X[0, 0] = np.inf
    return [
        ("wrong_width", dict(X=X[:, :4], y=y), r"^X must have shape"),
        ("nan", dict(X=nan_X, y=y), r"^X contains NaN"),
        ("inf", dict(X=inf_X, y=y), r"^X contains NaN"),
        ("empty", dict(X=np.zeros((0, 5)), y=np.zeros(0)), r"^X is empty"),
        ("strings", dict(X=[["a"] * 5] * 3, y=[0, 1, 0]), r"^X must be an array"),
        ("y_length", dict(X=X, y=y[:-1]), r"^y must have shape \(20,\)"),
        ("y_range", dict(X=X, y=y * 2), r"^y must hold labels in \[0, 1\]"),
        ("y_nan", dict(X=X, y=np.where(y > 0, np.nan, 0.0)), r"^y contains NaN"),
        ("soft_length", dict(X=X, y=y, soft_targets=y[:5]), r"^soft_targets must have shape"),
        ("soft_range", dict(X=X, y=y, soft_targets=y + 0.5), r"^soft_targets must hold probabilities"),
        ("x_val_alone", dict(X=X, y=y, X_val=X), r"X_val was given without y_val"),
        ("y_val_alone", dict(X=X, y=y, y_val=y), r"y_val was given without X_val"),
        ("soft_val_alone", dict(X=X, y=y, soft_val=y), r"soft_val was given without X_val"),
        ("x_val_shape", dict(X=X, y=y, X_val=X[:, :3], y_val=y), r"^X_val must have shape"),
        ("y_val_length", dict(X=X, y=y, X_val=X, y_val=y[:3]), r"^y_val must have shape"),
        ("soft_val_length", dict(X=X, y=y, X_val=X, y_val=y, soft_val=y[:2]), r"^soft_val must have shape"),
        ("mask_shape", dict(X=X, y=y, masks={"W": np.ones((5, 8), bool)}), r"^masks\['W'\] must be a bool"),
        ("mask_dtype", dict(X=X, y=y, masks={"U": np.ones((8, 8))}), r"^masks\['U'\] must be a bool"),
        ("mask_key", dict(X=X, y=y, masks={"w_out": np.ones((1, 8), bool)}), r"^masks may only"),
        ("one_row", dict(X=X[:1], y=y[:1]), r"^X has 1 example; training needs at least 2"),
        ("one_row_with_val", dict(X=X[:1], y=y[:1], X_val=X, y_val=y), r"^X has 1 example; training needs"),
        ("huge", dict(X=X + 1e30, y=y), r"^X holds values up to 1e\+30 in magnitude; beyond 1e\+15"),
        ("huge_val", dict(X=X, y=y, X_val=X - 2e15, y_val=y), r"^X_val holds values up to 2e\+15"),
    ]


@pytest.mark.parametrize("case", _bad_inputs(), ids=lambda c: c[0])
def test_fit_rejects_bad_data(case):
    _, kwargs, message = case
    model = FastGRNN(FastGRNNConfig(), seed=0)
    before = model.weights()
    with pytest.raises(InvalidInputError, match=message):
        Trainer(model, fast_config(epochs=1, enable_distillation=True)).fit(**kwargs)
    assert all(np.array_equal(before[k], model.weights()[k]) for k in before)  # untouched


def test_the_split_must_leave_two_examples_to_train_on(rng):
    X, y = easy_task(rng, 2)
    model = FastGRNN(FastGRNNConfig(), seed=0)
    with pytest.raises(InvalidInputError, match=r"^X has 2 examples and validation_split 0.5 holds out 1, "
                                                r"leaving 1 to train on; training needs at least 2"):
        Trainer(model, fast_config(validation_split=0.5)).fit(X, y)
    with pytest.raises(InvalidInputError, match=r"leaving 1 to train on"):
        compress(model, X, y, target_sparsity=0.5, config=fast_config(validation_split=0.5))
    Trainer(model, fast_config(epochs=1)).fit(X, np.array([0.0, 1.0]))  # two examples, nothing held out


def test_features_up_to_the_bound_train(rng):
    X, y = easy_task(rng, 40)
    X[0, 0] = -1e15
    Trainer(FastGRNN(FastGRNNConfig(), seed=0), fast_config(epochs=1)).fit(X, y)


def test_one_class_labels_warn_once(rng):
    X, _ = easy_task(rng, 60)
    ones = np.ones(60)
    with pytest.warns(TrainingDataWarning, match=r"^every training label is 1: the model can only learn"):
        Trainer(FastGRNN(FastGRNNConfig(), seed=0), fast_config(epochs=1)).fit(X, ones)
    with pytest.warns(TrainingDataWarning, match="every training label is 2"):
        Trainer(FastGRNN(FastGRNNConfig(output_dim=3), seed=0), fast_config(epochs=1)).fit(X, np.full(60, 2))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        compress(FastGRNN(FastGRNNConfig(), seed=0), X, ones, target_sparsity=0.5, config=fast_config(epochs=3))
    assert [type(w.message) for w in seen] == [TrainingDataWarning]  # once, not once per stage
    assert seen[0].filename == __file__  # points at the caller
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # a teacher's soft targets carry what the labels do not
        Trainer(FastGRNN(FastGRNNConfig(), seed=0), fast_config(epochs=1, enable_distillation=True)).fit(
            X, ones, soft_targets=rng.random(60))
        Trainer(FastGRNN(FastGRNNConfig(), seed=0), fast_config(epochs=1)).fit(X, np.arange(60) % 2)


@pytest.mark.parametrize("timesteps", [1, 2])
def test_U_trains_only_with_more_than_one_timestep(rng, timesteps):
    X, y = easy_task(rng, 300, timesteps)
    model = FastGRNN(FastGRNNConfig(timesteps=timesteps), seed=0)
    before = model.weights()
    Trainer(model, fast_config(epochs=3, l2_reg=0.1)).fit(X, y)
    after = model.weights()
    assert not np.array_equal(after["W"], before["W"])
    # with one timestep U multiplies h0 = 0: no gradient, and L2 must not shrink it either
    assert np.array_equal(after["U"], before["U"]) == (timesteps == 1)


def test_stage_epochs():
    assert stage_epochs(100) == {"dense": 34, "iht": 33, "retrain": 33}
    assert stage_epochs(30) == {"dense": 10, "iht": 10, "retrain": 10}
    assert stage_epochs(2) == {"dense": 1, "iht": 1, "retrain": 1}
    with pytest.raises(ConfigError, match="epochs"):
        stage_epochs(0)


@pytest.mark.parametrize("timesteps", [1, 2])
def test_compress_counts_U_only_where_it_is_used(rng, timesteps):
    X, y = easy_task(rng, 300, timesteps)
    model = FastGRNN(FastGRNNConfig(timesteps=timesteps), seed=0)
    report = compress(model, X, y, target_sparsity=0.5, config=fast_config(epochs=6, l2_reg=0.1))
    w_zeros = float(np.mean(model.cell.W.to_dense() == 0))
    assert report.stages[0].sparsity == 0.0  # dense training made no zeros, in U either
    if timesteps == 1:
        assert report.stages[-1].sparsity == counted_sparsity(model) == w_zeros == pytest.approx(0.5, abs=0.03)
        assert len(report.notes) == 1 and "U is unused" in report.notes[0] and report.notes[0] in report.table()
    else:
        assert report.stages[-1].sparsity == counted_sparsity(model) == model.sparsity
        assert report.notes == () and "note" not in report.table()


def test_bad_data_for_other_shapes_and_classes(rng):
    seq = FastGRNN(FastGRNNConfig(timesteps=3), seed=0)
    with pytest.raises(InvalidInputError, match=r"^X must have shape \(N, 3, 5\)"):
        Trainer(seq).fit(rng.random((10, 2, 5)), np.zeros(10))
    softmax = FastGRNN(FastGRNNConfig(output_dim=3), seed=0)
    X = rng.random((10, 5))
    with pytest.raises(InvalidInputError, match=r"^y must hold integer classes in \[0, 3\)"):
        Trainer(softmax).fit(X, np.full(10, 3))
    with pytest.raises(InvalidInputError, match=r"^y must hold integer classes"):
        Trainer(softmax).fit(X, np.full(10, 0.5))
    with pytest.raises(InvalidInputError, match=r"^soft_targets must have shape \(10, 3\)"):
        Trainer(softmax, fast_config(enable_distillation=True)).fit(X, np.zeros(10), soft_targets=np.zeros(10))
    with pytest.raises(InvalidInputError, match=r"^soft_targets rows must sum to 1"):
        Trainer(softmax, fast_config(enable_distillation=True)).fit(X, np.zeros(10), soft_targets=np.zeros((10, 3)))
    low_rank = FastGRNN(FastGRNNConfig(w_rank=2), seed=0)
    with pytest.raises(InvalidInputError, match=r"^masks\['W'\] needs a dense W"):
        Trainer(low_rank).fit(X, np.arange(10) % 2, masks={"W": np.ones((8, 5), bool)})
    with pytest.raises(InvalidInputError, match="^model must be"):
        Trainer("not a model")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="^config must be"):
        Trainer(seq, {"epochs": 3})  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=r"^y must have shape"):
        evaluate(seq, rng.random((4, 3, 5)), np.zeros(5))


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(target_sparsity=1.0), ConfigError, "target_sparsity"),
    (dict(target_sparsity=-0.1), ConfigError, "target_sparsity"),
    (dict(target_sparsity=0.5, iht_epochs=-1), ConfigError, "iht_epochs"),
    (dict(target_sparsity=0.5, dense_epochs=1.5), ConfigError, "dense_epochs"),
    (dict(target_sparsity=0.5, quantize="yes"), ConfigError, "quantize"),
    (dict(target_sparsity=0.5, X_val=np.zeros((3, 5))), InvalidInputError, "X_val was given without y_val"),
])
def test_compress_rejects_bad_settings(rng, kwargs, error, message):
    X, y = easy_task(rng, 50)
    with pytest.raises(error, match=message):
        compress(FastGRNN(FastGRNNConfig(), seed=0), X, y, **kwargs)
