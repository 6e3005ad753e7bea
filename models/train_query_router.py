"""Train, calibrate and check the shipped default query model, `query_router.safetensors`.

    python models/train_query_router.py [--data ../shared/data] [--out models/query_router.safetensors]
    python models/train_query_router.py --evidence     # the training-mix table of the model card

The data are RouteLLM's per-query outcomes of GPT-4 (strong) and Mixtral (weak) with MiniLM embeddings
(`../shared/data/embeddings`, see its README). The model is trained on MMLU only, with the prompt length as
a side input (the model card says why). MMLU's rows are split once, stratified on the four outcome
combinations, with a fixed seed: 70% to train, 15% to calibrate, 15% to test. The calibration certifies
"at least 95% of the strong model's quality" with probability 0.9 (risk `quality_loss`); the test rows,
used for nothing else, show what that gives.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from tinydancer.evaluation import (RoutingData, apgr, concatenate, load_embeddings, stratified_kfold,
                                   subject_folds)
from tinydancer.query_router import QueryRouter

SEED = 20261201
TARGET, DELTA, RISK = 0.95, 0.1, "quality_loss"


def split(data: RoutingData, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices to train on (70%), calibrate on (15%) and test on (15%), stratified on the outcomes."""
    rng = np.random.default_rng(seed)
    outcome = (data.strong * 2 + data.weak).astype(int)
    parts: list[list[np.ndarray]] = [[], [], []]
    for value in np.unique(outcome):
        rows = rng.permutation(np.flatnonzero(outcome == value))
        a, b = int(round(0.70 * len(rows))), int(round(0.85 * len(rows)))
        for part, chunk in zip(parts, (rows[:a], rows[a:b], rows[b:])):
            part.append(chunk)
    train, calibrate, test = (np.sort(np.concatenate(p)) for p in parts)
    return train, calibrate, test


def fit(data: RoutingData, lengths: bool, seed: int) -> QueryRouter:
    return QueryRouter.fit(data.embeddings, strong=data.strong, weak=data.weak, seed=seed,
                           prompt_length=data.prompt_chars if lengths else None)


def gain(router: QueryRouter, data: RoutingData, lengths: bool) -> np.ndarray:
    return router.expected_gain(data.embeddings, prompt_length=data.prompt_chars if lengths else None)


def evidence(root: str) -> None:
    """APGR on MMLU subjects held out and on GSM8K rows held out, for each training mix, with and without
    the prompt length (5 folds each; the folds of both datasets run side by side)."""
    mmlu, gsm8k = load_embeddings(root, "mmlu"), load_embeddings(root, "gsm8k")
    subjects, rows = subject_folds(mmlu.subject, k=5, seed=0), stratified_kfold(gsm8k, k=5, seed=0)
    print("training mix    prompt length  MMLU, subjects held out  GSM8K, rows held out")
    for lengths in (False, True):
        for mix in ("mmlu", "gsm8k", "both"):
            out_m, out_g = np.zeros(len(mmlu)), np.zeros(len(gsm8k))
            for (m_train, m_test), (g_train, g_test) in zip(subjects, rows):
                parts = [d.take(t) for d, t, use in ((mmlu, m_train, mix != "gsm8k"), (gsm8k, g_train, mix != "mmlu"))
                         if use]
                router = fit(concatenate(parts) if len(parts) > 1 else parts[0], lengths, 0)
                out_m[m_test] = gain(router, mmlu.take(m_test), lengths)
                out_g[g_test] = gain(router, gsm8k.take(g_test), lengths)
            print(f"{mix:<15} {'yes' if lengths else 'no':<14} {apgr(out_m, mmlu.strong, mmlu.weak):>23.3f}"
                  f"  {apgr(out_g, gsm8k.strong, gsm8k.weak):>20.3f}", flush=True)
    print(f"prompt length alone            {apgr(np.log(mmlu.prompt_chars), mmlu.strong, mmlu.weak):>23.3f}"
          f"  {apgr(np.log(gsm8k.prompt_chars), gsm8k.strong, gsm8k.weak):>20.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data", help="the data folder (default: %(default)s)")
    parser.add_argument("--out", default=str(Path(__file__).with_name("query_router.safetensors")))
    parser.add_argument("--evidence", action="store_true", help="print the training-mix table instead")
    args = parser.parse_args(argv)
    if args.evidence:
        evidence(args.data)
        return 0
    mmlu = load_embeddings(args.data, "mmlu")
    train, calibrate, test = split(mmlu, SEED)
    router = fit(mmlu.take(train), True, SEED)
    cal_rows = mmlu.take(calibrate)
    cal = router.calibrate(cal_rows.embeddings, target=TARGET, delta=DELTA, risk=RISK, strong=cal_rows.strong,
                           weak=cal_rows.weak, prompt_length=cal_rows.prompt_chars)
    router.save(args.out)
    t = mmlu.take(test)
    decisions = QueryRouter.load(args.out).route_batch(t.embeddings, prompt_length=t.prompt_chars)
    light = decisions.use_lightweight
    quality = np.where(light, t.weak, t.strong).mean()
    print(f"wrote {args.out}: {Path(args.out).stat().st_size} bytes; rows: {len(train)} train, {len(calibrate)} "
          f"calibrate, {len(test)} test (seed {SEED})")
    print(f"calibration: risk {cal.risk}, target {cal.target}, delta {cal.delta}, certified {cal.certified}, "
          f"threshold {cal.threshold:.6f}, lightweight share on the calibration rows {cal.lightweight_share:.3f}")
    print(f"test rows: APGR {apgr(decisions.expected_gain, t.strong, t.weak):.3f}; lightweight share "
          f"{light.mean():.3f}; quality {quality:.4f} = {quality / t.strong.mean():.3f} of always-strong "
          f"({t.strong.mean():.4f}); always-weak {t.weak.mean() / t.strong.mean():.3f} of it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
