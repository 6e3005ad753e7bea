"""The FastGRNN forward pass, loss and backpropagation through time, in float64 NumPy.

Parameters are a mapping keyed as :meth:`~tinydancer.model.FastGRNN.weights` (``W`` or ``W1``/``W2``,
``U`` or ``U1``/``U2``, ``b_z``, ``b_h``, ``w_out``, ``b_out``, ``zeta``, ``nu``); inputs are (B, T, I).
Everything is vectorised over the batch; only the time steps are a Python loop. The tests check every
gradient here against finite differences.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "EPS",
    "ForwardCache",
    "sigmoid",
    "forward",
    "backward",
    "soften",
    "data_loss",
    "objective",
    "loss_and_gradients",
]

# Probabilities are clipped to [EPS, 1 - EPS] before a logarithm or a logit.
EPS = 1e-7
# Weight matrices that L2 applies to; biases, zeta and nu are not regularised.
_REGULARIZED = frozenset({"W", "W1", "W2", "U", "U1", "U2", "w_out"})


class ForwardCache(NamedTuple):
    """What :func:`backward` needs from :func:`forward`: the dense W and U, sigmoid(zeta) and sigmoid(nu),
    and per time step the hidden states (``hs[0]`` is h_0 = 0), update gates and candidate states."""

    W: np.ndarray
    U: np.ndarray
    sz: float
    sn: float
    hs: list[np.ndarray]
    zs: list[np.ndarray]
    cs: list[np.ndarray]


def sigmoid(x: Any) -> Any:
    """The logistic function, elementwise (scalar or array)."""
    # tanh form: no overflow warnings for large |x|
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _dense(params: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    """``params[name]``, or the product of its low-rank factors ``name1 @ name2``."""
    if name in params:
        return params[name]
    return params[name + "1"] @ params[name + "2"]


def forward(params: Mapping[str, np.ndarray], X: np.ndarray,
            keep_cache: bool = True) -> tuple[np.ndarray, ForwardCache | None]:
    """Run the cell over every time step.

    Args:
        params: the parameters, float64.
        X: inputs (B, T, I), float64.
        keep_cache: keep the per-step states for :func:`backward`; ``False`` saves the memory.

    Returns:
        (logits (B, output_dim), the cache, or ``None`` without ``keep_cache``).
    """
    W, U = _dense(params, "W"), _dense(params, "U")
    batch, steps, inputs = X.shape
    hidden = W.shape[0]
    sz, sn = sigmoid(float(params["zeta"])), sigmoid(float(params["nu"]))
    b_z, b_h = params["b_z"], params["b_h"]
    wx = (X.reshape(batch * steps, inputs) @ W.T).reshape(batch, steps, hidden)
    hs: list[np.ndarray] = [np.zeros((batch, hidden))]
    zs: list[np.ndarray] = []
    cs: list[np.ndarray] = []
    h = hs[0]
    for t in range(steps):
        a = wx[:, t] if t == 0 else wx[:, t] + h @ U.T  # h_0 = 0
        z = sigmoid(a + b_z)
        c = np.tanh(a + b_h)
        gate = (sz + sn) - sz * z
        h = gate * c if t == 0 else z * h + gate * c
        if keep_cache:
            zs.append(z)
            cs.append(c)
            hs.append(h)
    logits = h @ params["w_out"].T + params["b_out"]
    return logits, (ForwardCache(W, U, sz, sn, hs, zs, cs) if keep_cache else None)


def backward(params: Mapping[str, np.ndarray], X: np.ndarray, cache: ForwardCache,
             dlogits: np.ndarray) -> dict[str, np.ndarray]:
    """Backpropagation through time.

    Args:
        params: the parameters :func:`forward` ran with.
        X: the inputs (B, T, I) it ran on.
        cache: the cache it returned.
        dlogits: dL/dlogits (B, output_dim).

    Returns:
        The gradient of every parameter, keyed as in ``params`` (low-rank factors get the gradients of
        their factors).
    """
    W, U, sz, sn, hs, zs, cs = cache
    batch, steps, inputs = X.shape
    hidden = W.shape[0]
    grads: dict[str, np.ndarray] = {"w_out": dlogits.T @ hs[-1], "b_out": dlogits.sum(axis=0)}
    dh = dlogits @ params["w_out"]
    da_all = np.empty((batch, steps, hidden))
    dU = np.zeros_like(U)
    d_bz, d_bh = np.zeros(hidden), np.zeros(hidden)
    d_sz = d_sn = 0.0
    for t in range(steps - 1, -1, -1):
        z, c, h_prev = zs[t], cs[t], hs[t]
        dhc = dh * c
        d_sn += dhc.sum()
        d_sz += (dhc * (1.0 - z)).sum()
        dz = dh * (h_prev - sz * c) if t else -sz * dhc  # dh_t/dz_t = h_{t-1} - sigmoid(zeta) c_t
        dpz = dz * z * (1.0 - z)
        dpc = dh * ((sz + sn) - sz * z) * (1.0 - c * c)
        da = dpz + dpc
        d_bz += dpz.sum(axis=0)
        d_bh += dpc.sum(axis=0)
        da_all[:, t] = da
        if t:
            dU += da.T @ h_prev
            dh = dh * z + da @ U
    grads["b_z"], grads["b_h"] = d_bz, d_bh
    dW = da_all.reshape(batch * steps, hidden).T @ X.reshape(batch * steps, inputs)
    for name, dense_grad in (("W", dW), ("U", dU)):
        if name in params:
            grads[name] = dense_grad
        else:
            left, right = params[name + "1"], params[name + "2"]
            grads[name + "1"], grads[name + "2"] = dense_grad @ right.T, left.T @ dense_grad
    grads["zeta"] = np.array(d_sz * sz * (1.0 - sz))
    grads["nu"] = np.array(d_sn * sn * (1.0 - sn))
    return grads


def soften(soft: np.ndarray, temperature: float, output_dim: int) -> np.ndarray:
    """Teacher probabilities softened at ``temperature``.

    Args:
        soft: (N,) probabilities for output_dim 1, else (N, output_dim) rows summing to 1.
        temperature: T > 0.
        output_dim: the model's output size.

    Returns:
        sigmoid(logit(q) / T) for output_dim 1, else softmax(log(q) / T), with q clipped away from 0 and 1.
    """
    if output_dim == 1:
        q = np.clip(soft, EPS, 1.0 - EPS)
        return sigmoid(np.log(q / (1.0 - q)) / temperature)
    scaled = np.log(np.clip(soft, EPS, 1.0)) / temperature
    e = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    """log(softmax) over each row, shifted by the row's maximum so no exponent overflows."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def data_loss(logits: np.ndarray, y: np.ndarray, q_soft: np.ndarray | None, temperature: float,
              alpha: float) -> tuple[float, np.ndarray]:
    """The mean loss over a batch and its gradient with respect to the logits.

    Hard: binary cross-entropy on sigmoid(logit), or softmax cross-entropy with integer classes. With
    softened teacher targets ``q_soft``: ``alpha * T^2 * CE(student at T, q_soft) + (1 - alpha) * hard``.

    Args:
        logits: (B, output_dim).
        y: (B,) labels in [0, 1] for output_dim 1, else integer classes.
        q_soft: the teacher's targets from :func:`soften`, or ``None`` for the hard loss only.
        temperature, alpha: the distillation temperature T and soft-loss weight (used with ``q_soft``).

    Returns:
        (mean loss, dL/dlogits (B, output_dim), already divided by B).
    """
    batch = logits.shape[0]
    if logits.shape[1] == 1:
        l = logits[:, 0]
        terms = np.logaddexp(0.0, l) - y * l
        dl = sigmoid(l) - y
        if q_soft is not None:
            lt = l / temperature
            soft_terms = temperature * temperature * (np.logaddexp(0.0, lt) - q_soft * lt)
            terms = alpha * soft_terms + (1.0 - alpha) * terms
            dl = alpha * temperature * (sigmoid(lt) - q_soft) + (1.0 - alpha) * dl
        return float(terms.mean()), (dl / batch)[:, None]
    rows = np.arange(batch)
    logp = _log_softmax(logits)
    terms = -logp[rows, y]
    dl = np.exp(logp)
    dl[rows, y] -= 1.0
    if q_soft is not None:
        logp_t = _log_softmax(logits / temperature)
        soft_terms = -temperature * temperature * (q_soft * logp_t).sum(axis=1)
        terms = alpha * soft_terms + (1.0 - alpha) * terms
        dl = alpha * temperature * (np.exp(logp_t) - q_soft) + (1.0 - alpha) * dl
    return float(terms.mean()), dl / batch


def objective(params: Mapping[str, np.ndarray], X: np.ndarray, y: np.ndarray, q_soft: np.ndarray | None,
              temperature: float, alpha: float, l2_reg: float) -> tuple[float, float, dict[str, np.ndarray]]:
    """The training objective of one batch.

    Args:
        params: the parameters, float64.
        X: inputs (B, T, I), float64.
        y, q_soft, temperature, alpha: as for :func:`data_loss`.
        l2_reg: adds ``l2_reg / 2 * ||w||^2`` over the weight matrices (W, U, their factors, w_out).

    Returns:
        (data loss, L2 penalty, gradients of their sum keyed as ``params``).
    """
    logits, cache = forward(params, X)
    assert cache is not None  # keep_cache is on
    loss, dlogits = data_loss(logits, y, q_soft, temperature, alpha)
    grads = backward(params, X, cache, dlogits)
    penalty = 0.0
    if l2_reg:
        for name in _REGULARIZED.intersection(params):
            p = params[name]
            penalty += 0.5 * l2_reg * float(np.vdot(p, p))
            grads[name] = grads[name] + l2_reg * p
    return loss, penalty, grads


def loss_and_gradients(weights: Mapping[str, Any], X: Any, y: Any, soft_targets: Any = None, *,
                       temperature: float = 1.0, alpha: float = 0.5,
                       l2_reg: float = 0.0) -> tuple[float, dict[str, np.ndarray]]:
    """The training objective on (X, y) and its gradient for every parameter, in float64, from raw inputs
    (no validation: this is the function the gradient checks differentiate).

    Args:
        weights: parameters keyed as :meth:`FastGRNN.weights`.
        X: (N, T, I), or (N, I) for T = 1.
        y: (N,) labels in [0, 1] for output_dim 1, else integer classes.
        soft_targets: teacher probabilities ((N,) or (N, output_dim)); ``None`` for the hard loss only.
        temperature, alpha: the distillation temperature and soft-loss weight (used with soft_targets).
        l2_reg: adds ``l2_reg / 2 * ||w||^2`` over the weight matrices.

    Returns:
        (mean loss + L2 penalty, gradients keyed like ``weights``).
    """
    params = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 2:
        X = X[:, None, :]
    output_dim = params["w_out"].shape[0]
    y = np.asarray(y, dtype=np.intp if output_dim > 1 else np.float64)
    q = None if soft_targets is None else soften(np.asarray(soft_targets, dtype=np.float64), temperature, output_dim)
    loss, penalty, grads = objective(params, X, y, q, temperature, alpha, l2_reg)
    return loss + penalty, grads
