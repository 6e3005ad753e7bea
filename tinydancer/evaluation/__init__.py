"""Evaluation of query routers with RouteLLM's metrics, on RouteLLM's data.

A router scores each query; the higher the score, the sooner the query goes to the strong model. The
metrics follow that ranking over every budget of strong calls, the protocols decide which rows train and
which test, and the report puts each router beside random routing, the oracle, always-weak and
always-strong on the same rows.

The modules, one concern each:

* :mod:`~tinydancer.evaluation.metrics`: quality and PGR curves, APGR, CPT, the strong calls and cost
  saving for a share of the strong model's quality, the oracle and random scores, bootstrap intervals.
* :mod:`~tinydancer.evaluation.data`: :class:`RoutingData` and the loaders of the ``embeddings/`` and
  ``routellm/`` layouts (default folder ``../shared/data``).
* :mod:`~tinydancer.evaluation.protocols`: stratified k-fold, subject-held-out and cross-dataset splits,
  and out-of-fold scores.
* :mod:`~tinydancer.evaluation.tables`: :class:`Report`, the plain-text and JSON table.
* :mod:`~tinydancer.evaluation.plot`: :func:`plot_quality` (needs the ``plot`` extra, matplotlib).

Example (prompt length as a router, 5-fold out-of-fold scores of a router ``fit`` left out)::

    import numpy as np
    from tinydancer.evaluation import Report, apgr, load_embeddings

    data = load_embeddings("../shared/data", "mmlu")
    print(apgr(np.log(data.prompt_chars), data.strong, data.weak))   # about 0.586
    print(Report.for_data(data).table())
"""

from __future__ import annotations

from tinydancer.evaluation.data import (
    DATASETS,
    DEFAULT_ROOT,
    RoutingData,
    concatenate,
    load_embeddings,
    load_routellm,
)
from tinydancer.evaluation.metrics import (
    GPT4_PRICE,
    MIXTRAL_PRICE,
    apgr,
    bootstrap,
    cost_saving,
    cpt,
    oracle_score,
    pgr_curve,
    quality_curve,
    random_score,
    share_for_quality,
)
from tinydancer.errors import MissingExtraError
from tinydancer.evaluation.plot import plot_quality
from tinydancer.evaluation.protocols import (
    Fold,
    cross_dataset,
    out_of_fold_scores,
    stratified_kfold,
    subject_folds,
)
from tinydancer.evaluation.tables import Report, ScorerResult, reference_scores

__all__ = [
    "DATASETS",
    "DEFAULT_ROOT",
    "GPT4_PRICE",
    "MIXTRAL_PRICE",
    "Fold",
    "MissingExtraError",
    "Report",
    "RoutingData",
    "ScorerResult",
    "apgr",
    "bootstrap",
    "concatenate",
    "cost_saving",
    "cpt",
    "cross_dataset",
    "load_embeddings",
    "load_routellm",
    "oracle_score",
    "out_of_fold_scores",
    "pgr_curve",
    "plot_quality",
    "quality_curve",
    "random_score",
    "reference_scores",
    "share_for_quality",
    "stratified_kfold",
    "subject_folds",
]
