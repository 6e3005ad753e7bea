"""Train the shipped default candidate model, models/candidate_router.safetensors.

The model is distilled from the crate's weighted feature score: its input is the five weighted features of
a candidate (tinydancer.features with the default FeatureConfig), and it is trained to output
clip(sum of the weighted features, 0, 1), so a candidate identical to the query ranks above unrelated ones
and the ranking follows the crate's formula. Run from the repository root:

    python models/train_candidate_router.py

It prints the quality figures that models/MODEL_CARD.md reports. Deterministic for a given seed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from tinydancer.model import FastGRNN, FastGRNNConfig
from tinydancer.training import Trainer, TrainingConfig, evaluate

WEIGHTS = np.array([0.4, 0.2, 0.15, 0.15, 0.1], dtype=np.float64)
HERE = Path(__file__).resolve().parent


def raw_features(rng: np.random.Generator, n: int) -> np.ndarray:
    """Raw feature values as routing meets them: similarity mostly in [0, 1] (with some negative), recency
    spread over hours to months, frequency and success anywhere, metadata overlap in quarters."""
    sim = np.where(rng.random(n) < 0.85, rng.uniform(0, 1, n), rng.uniform(-1, 0, n))
    age = rng.exponential(3600.0, n) * rng.choice([0.01, 1.0, 24.0, 24.0 * 30], n)
    rec = np.exp(-0.001 * age)
    freq = np.minimum(np.log1p(rng.integers(0, 20000, n) * rng.random(n) ** 3) / np.log1p(10000.0), 1.0)
    succ = rng.uniform(0, 1, n)
    meta = rng.integers(0, 5, n) / 4.0
    return np.stack([sim, rec, freq, succ, meta], axis=1)


def dataset(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = raw_features(rng, n) * WEIGHTS
    return X.astype(np.float32), np.clip(X.sum(axis=1), 0.0, 1.0).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE / "candidate_router.safetensors"))
    parser.add_argument("--seed", type=int, default=20261127)
    args = parser.parse_args()
    X, y = dataset(args.seed, 40_000)
    X_val, y_val = dataset(args.seed + 1, 10_000)
    model = FastGRNN(FastGRNNConfig(input_dim=5, hidden_dim=8), seed=args.seed)
    config = TrainingConfig(learning_rate=0.01, batch_size=64, epochs=150, early_stopping_patience=15,
                            lr_decay=0.5, lr_decay_step=40, l2_reg=0.0, seed=args.seed)
    history = Trainer(model, config).fit(X, y, X_val=X_val, y_val=y_val)
    model.save(args.out)
    p = model.forward_batch(X_val)
    err = np.abs(p - y_val)
    report = {
        "epochs": len(history),
        "validation_bce": evaluate(model, X_val, y_val)["loss"],
        "mean_abs_error": float(err.mean()),
        "p99_abs_error": float(np.quantile(err, 0.99)),
        "max_abs_error": float(err.max()),
        "spearman": float(np.corrcoef(np.argsort(np.argsort(p)), np.argsort(np.argsort(y_val)))[0, 1]),
        "size_bytes": model.size_bytes(),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
