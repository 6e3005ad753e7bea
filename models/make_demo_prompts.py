"""Write `demo_prompts.json`: the example prompts `tinydancer demo` routes with the shipped query model.

    python models/make_demo_prompts.py [--data ../shared/data]

Twelve real prompts from RouteLLM's data (Apache-2.0, lm-sys/RouteLLM; see ../shared/data/README.md), drawn
at random with a fixed seed, not picked: eight MMLU questions from the shipped query model's test rows
(never used to train or calibrate it) and four GSM8K problems (a dataset it was not trained on). Each comes
with its all-MiniLM-L6-v2 embedding from the shared data, so the demo runs without the `[embed]` extra,
and with whether GPT-4 and Mixtral answered it correctly, so the demo can show what routing cost and kept.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from train_query_router import SEED, split  # noqa: E402  (the shipped model's split)

from tinydancer.atomic_files import write_atomic  # noqa: E402
from tinydancer.evaluation import load_embeddings, load_routellm  # noqa: E402

DRAW_SEED = 12


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data", help="the data folder (default: %(default)s)")
    parser.add_argument("--out", default=str(Path(__file__).with_name("demo_prompts.json")))
    args = parser.parse_args(argv)
    rng = np.random.default_rng(DRAW_SEED)
    prompts = []
    for dataset, count in (("mmlu", 8), ("gsm8k", 4)):
        texts, rows = load_routellm(args.data, dataset), load_embeddings(args.data, dataset)
        pool = split(rows, SEED)[2] if dataset == "mmlu" else np.arange(len(rows))
        for i in sorted(rng.choice(pool, count, replace=False).tolist()):
            prompts.append({
                "dataset": dataset,
                "subject": str(rows.subject[i]),
                "text": texts.prompts[i],
                "strong_correct": bool(rows.strong[i]),
                "weak_correct": bool(rows.weak[i]),
                # the shortest decimal that reads back as the same float32
                "embedding": [float(np.format_float_positional(v, unique=True)) for v in rows.embeddings[i]],
            })
    payload = {
        "source": "RouteLLM (lm-sys/RouteLLM, Apache-2.0): MMLU and GSM8K prompts with GPT-4-1106-preview and "
                  "Mixtral-8x7B-Instruct-v0.1 correctness; all-MiniLM-L6-v2 embeddings (mean pooling, L2-normalised)",
        "made_by": "python models/make_demo_prompts.py",
        "prompts": prompts,
    }
    write_atomic(args.out, (json.dumps(payload, indent=1) + "\n").encode("utf-8"))
    print(f"wrote {args.out}: {len(prompts)} prompts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
