"""``tinydancer eval``: measure the query router on RouteLLM's per-query outcomes (GPT-4 and Mixtral on MMLU
and GSM8K) under three protocols, beside prompt length alone, random routing, the oracle and the two fixed
policies, and print RouteLLM's metrics with bootstrap intervals."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from tinydancer.cli.options import non_negative_int, positive_int, write_json

if TYPE_CHECKING:
    import numpy as np

    from tinydancer.evaluation import RoutingData

HELP = "measure the query router on RouteLLM's MMLU and GSM8K outcomes"
DESCRIPTION = ("Train the query router (QueryRouter.fit) under each protocol and print APGR, CPT and the cost "
               "saving at 90%% and 95%% of the strong model's quality, beside prompt length alone, random "
               "routing, the oracle, always-weak and always-strong, on the same rows. Protocols: cv (stratified "
               "k-fold within each dataset), subject (MMLU subjects held out), cross (train on one dataset, "
               "test on the other).")
PROTOCOLS = ("cv", "subject", "cross")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's options to its subparser."""
    parser.add_argument("--data", default="../shared/data", metavar="PATH",
                        help="the data folder, holding embeddings/ (default: %(default)s)")
    parser.add_argument("--protocol", action="append", choices=PROTOCOLS,
                        help="only this protocol (repeatable; default: all three)")
    parser.add_argument("--dataset", action="append", choices=("mmlu", "gsm8k"),
                        help="only this dataset for cv (repeatable; default: both)")
    parser.add_argument("--prompt-length", action="store_true",
                        help="also measure the router that reads the prompt length as a side input")
    parser.add_argument("--members", type=positive_int, default=4,
                        help="FastGRNN members of the router's ensemble (default: %(default)s)")
    parser.add_argument("--hidden", type=positive_int, default=4,
                        help="hidden units per member (default: %(default)s)")
    parser.add_argument("--folds", type=positive_int, default=5, help="folds of cv and subject (default: %(default)s)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of folds and training (default: %(default)s)")
    parser.add_argument("--bootstrap", type=positive_int, default=1000, metavar="N",
                        help="bootstrap resamples per interval (default: %(default)s)")
    parser.add_argument("--json", metavar="PATH", help="also write every table as JSON here")
    parser.add_argument("--plot", metavar="PATH", help="draw quality against strong-call share (PNG; needs tinydancer[plot])")


def _fitter(prompt_length: bool, seed: int, config: Any) -> Any:
    """``fit(train) -> scorer`` for the evaluation protocols: the scorer ranks by expected gain."""
    from tinydancer.query_router import QueryRouter

    def fit(train: RoutingData) -> Any:
        router = QueryRouter.fit(train.embeddings, strong=train.strong, weak=train.weak, seed=seed, config=config,
                                 prompt_length=train.prompt_chars if prompt_length else None)

        def scorer(test: RoutingData) -> np.ndarray:
            return router.expected_gain(test.embeddings, prompt_length=test.prompt_chars if prompt_length else None)
        return scorer
    return fit


def run(args: argparse.Namespace) -> int:
    """Print a table per protocol and dataset; the exit status is 0.

    Raises:
        TinyDancerError: missing or malformed data, an unwritable --json or --plot path.
    """
    import numpy as np

    from tinydancer.atomic_files import check_writable
    from tinydancer.errors import OutputFileError
    from tinydancer.evaluation import (Report, cross_dataset, load_embeddings, out_of_fold_scores, plot_quality,
                                       quality_curve, reference_scores, stratified_kfold,
                                       subject_folds)

    for path in (args.json, args.plot):
        if path is not None:
            check_writable(path, OutputFileError)
    protocols = args.protocol or list(PROTOCOLS)
    datasets = args.dataset or ["mmlu", "gsm8k"]
    from tinydancer.query_router import EnsembleConfig

    config = EnsembleConfig(members=args.members, hidden=args.hidden)
    variants = {"router": _fitter(False, args.seed, config)}
    if args.prompt_length:
        variants["router + prompt length"] = _fitter(True, args.seed, config)
    loaded: dict[str, RoutingData] = {}

    def data(name: str) -> RoutingData:
        if name not in loaded:
            loaded[name] = load_embeddings(args.data, name)
        return loaded[name]

    reports: list[tuple[Report, RoutingData, dict[str, np.ndarray]]] = []

    def report(title: str, rows: RoutingData, scores: dict[str, np.ndarray]) -> None:
        r = Report.for_data(rows, scores, name=title, n_boot=args.bootstrap, seed=args.seed)
        reports.append((r, rows, scores))
        print(r.table(), end="\n\n", flush=True)

    if "cv" in protocols:
        for name in datasets:
            rows = data(name)
            folds = stratified_kfold(rows, k=args.folds, seed=args.seed)
            report(f"{name}, stratified {args.folds}-fold cross-validation", rows,
                   {label: out_of_fold_scores(fit, rows, folds) for label, fit in variants.items()})
    if "subject" in protocols:
        rows = data("mmlu")
        folds = subject_folds(rows.subject, k=args.folds, seed=args.seed)
        report(f"mmlu, subjects held out ({args.folds} folds)", rows,
               {label: out_of_fold_scores(fit, rows, folds) for label, fit in variants.items()})
    if "cross" in protocols:
        both, folds = cross_dataset(data("mmlu"), data("gsm8k"))
        for fold, title in zip(folds, ("trained on mmlu, tested on gsm8k", "trained on gsm8k, tested on mmlu")):
            train, test = both.take(fold.train), both.take(fold.test)
            report(title, test, {label: fit(train)(test) for label, fit in variants.items()})

    if args.json is not None:
        payload = {"tables": [r.to_dict() for r, _, _ in reports]}
        write_json(args.json, payload)
        print(f"wrote {args.json}")
    if args.plot is not None:
        first, rows, scores = reports[0]
        references = reference_scores(rows)
        scores = {**scores, "random": references["random"], "oracle": references["oracle"]}
        curves = {label: quality_curve(score, rows.strong, rows.weak) for label, score in scores.items()}
        plot_quality(curves, args.plot, title=first.name, strong_quality=first.q_strong, weak_quality=first.q_weak)
        print(f"wrote {args.plot}")
    return 0
