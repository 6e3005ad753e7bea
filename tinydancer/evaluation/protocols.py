"""Evaluation protocols: which rows train a router and which rows test it.

* :func:`stratified_kfold`: k folds keeping the share of each outcome (strong right or wrong, weak right or
  wrong) in every fold.
* :func:`subject_folds`: k folds of whole subjects, so a fold's test subjects are never seen in training.
* :func:`cross_dataset`: train on one dataset and test on the other, both ways.

Each gives :class:`Fold` pairs of row indices; :func:`out_of_fold_scores` trains on each fold's training
rows, scores its test rows, and assembles one score per row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from tinydancer.checks import integer
from tinydancer.errors import InvalidInputError
from tinydancer.evaluation.data import RoutingData, concatenate

__all__ = ["Fold", "Scorer", "stratified_kfold", "subject_folds", "cross_dataset", "out_of_fold_scores"]

# A trained router: scores the rows of a RoutingData, higher meaning "send to the strong model".
Scorer = Callable[[RoutingData], Any]


class Fold(NamedTuple):
    """One split: ``train`` and ``test`` are sorted int64 row indices, disjoint."""

    train: np.ndarray
    test: np.ndarray


def _labels(values: Any, name: str) -> np.ndarray:
    """``values`` as a non-empty 1-D array of labels."""
    array = np.asarray(values)
    if array.ndim != 1 or array.size == 0:
        raise InvalidInputError(f"{name} must be a non-empty 1-D array, got shape {array.shape}")
    kind = array.dtype.kind
    if kind == "O":
        return array.astype(np.str_)
    if kind not in "biufUS":
        raise InvalidInputError(f"{name} must hold labels (ints, str or numbers), got dtype {array.dtype}")
    if kind == "f" and not np.all(np.isfinite(array)):
        raise InvalidInputError(f"{name} holds NaN or infinite values")
    return array


def _folds_from(assignment: np.ndarray, k: int) -> list[Fold]:
    """The folds of a fold number per row."""
    rows = np.arange(assignment.size, dtype=np.int64)
    return [Fold(rows[assignment != f], rows[assignment == f]) for f in range(k)]


def stratified_kfold(labels: RoutingData | Any, k: int = 5, seed: int = 0) -> list[Fold]:
    """k folds whose test sets partition the rows, each stratum spread evenly over them.

    Each stratum's rows are shuffled, the strata laid end to end, and the rows dealt to the folds in turn,
    so every stratum's count differs by at most one between folds, and so do the fold sizes.

    Args:
        labels: a :class:`RoutingData`, stratified on its (strong, weak) pairs (the four outcome
            combinations for right/wrong answers), or an (N,) array of strata.
        k: the number of folds, 2..N.
        seed: seeds the shuffle.

    Returns:
        k :class:`Fold` s; together their test sets hold every row exactly once.

    Raises:
        InvalidInputError: bad labels, or ``k`` out of range.
    """
    if isinstance(labels, RoutingData):
        _, strata = np.unique(np.stack([labels.strong, labels.weak], axis=1), axis=0, return_inverse=True)
        strata = strata.reshape(-1)
    else:
        _, strata = np.unique(_labels(labels, "labels"), return_inverse=True)
    n = strata.size
    folds = integer(k, "k", 2, error=InvalidInputError)
    if folds > n:
        raise InvalidInputError(f"k must be <= the number of rows ({n}), got {folds}")
    rng = np.random.default_rng(integer(seed, "seed", 0, error=InvalidInputError))
    dealt = np.concatenate([rng.permutation(np.flatnonzero(strata == s)) for s in range(int(strata.max()) + 1)])
    assignment = np.empty(n, dtype=np.int64)
    assignment[dealt] = np.arange(n) % folds
    return _folds_from(assignment, folds)


def subject_folds(subject: RoutingData | Any, k: int = 5, seed: int = 0) -> list[Fold]:
    """k folds of whole subjects: every subject's rows are in one fold's test set, and never in its training set.

    Subjects are shuffled, then, largest first, each goes to the fold with the fewest rows so far.

    Args:
        subject: a :class:`RoutingData` (its ``subject``) or an (N,) array of subject labels.
        k: the number of folds, 2..the number of subjects.
        seed: seeds the shuffle (which breaks ties between subjects of equal size).

    Returns:
        k :class:`Fold` s; together their test sets hold every row exactly once.

    Raises:
        InvalidInputError: bad subjects, or ``k`` out of range.
    """
    values = subject.subject if isinstance(subject, RoutingData) else subject
    names, which, sizes = np.unique(_labels(values, "subject"), return_inverse=True, return_counts=True)
    which = which.reshape(-1)
    folds = integer(k, "k", 2, error=InvalidInputError)
    if folds > names.size:
        raise InvalidInputError(f"k must be <= the number of subjects ({names.size}), got {folds}")
    rng = np.random.default_rng(integer(seed, "seed", 0, error=InvalidInputError))
    shuffled = rng.permutation(names.size)
    by_size = shuffled[np.argsort(-sizes[shuffled], kind="stable")]
    fold_of = np.empty(names.size, dtype=np.int64)
    load = np.zeros(folds, dtype=np.int64)
    for s in by_size:
        f = int(np.argmin(load))  # the first fold of the fewest rows
        fold_of[s] = f
        load[f] += sizes[s]
    return _folds_from(fold_of[which], folds)


def cross_dataset(a: RoutingData, b: RoutingData) -> tuple[RoutingData, list[Fold]]:
    """Train on one dataset and test on the other, both ways.

    Args:
        a, b: the two datasets.

    Returns:
        ``(data, folds)``: the rows of ``a`` then ``b`` (:func:`~tinydancer.evaluation.data.concatenate`),
        and two folds: train on ``a``'s rows and test on ``b``'s, then the reverse. With
        :func:`out_of_fold_scores`, ``scores[len(a):]`` are ``b``'s scores from a router trained on ``a``.

    Raises:
        InvalidInputError: ``a`` or ``b`` is not a RoutingData, or their embeddings differ in width.
    """
    for name, value in (("a", a), ("b", b)):
        if not isinstance(value, RoutingData):
            raise InvalidInputError(f"{name} must be a RoutingData, got {type(value).__name__}")
    data = concatenate([a, b])
    rows_a = np.arange(len(a), dtype=np.int64)
    rows_b = np.arange(len(a), len(data), dtype=np.int64)
    return data, [Fold(rows_a, rows_b), Fold(rows_b, rows_a)]


def _check_folds(folds: Sequence[Fold], n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The folds as index arrays, checked: in range, disjoint train and test, test sets partitioning 0..n-1."""
    if isinstance(folds, (str, bytes)) or not isinstance(folds, Sequence) or not folds:
        raise InvalidInputError("folds must be a non-empty sequence of (train, test) index pairs")
    checked = []
    tested = np.zeros(n, dtype=np.int64)
    for i, fold in enumerate(folds):
        try:
            train, test = (np.asarray(part) for part in fold)
        except (TypeError, ValueError):
            raise InvalidInputError(f"folds[{i}] must be a (train, test) pair of index arrays") from None
        for part, name in ((train, "train"), (test, "test")):
            if part.ndim != 1 or (part.size and part.dtype.kind not in "iu"):
                raise InvalidInputError(f"folds[{i}].{name} must be 1-D integer indices")
            if part.size and (part.min() < 0 or part.max() >= n):
                raise InvalidInputError(f"folds[{i}].{name}: indices must lie in [0, {n})")
        if train.size == 0 or test.size == 0:
            raise InvalidInputError(f"folds[{i}]: train and test must both have rows")
        if np.intersect1d(train, test).size:
            raise InvalidInputError(f"folds[{i}]: train and test share rows")
        np.add.at(tested, test, 1)
        checked.append((train.astype(np.int64), test.astype(np.int64)))
    if np.any(tested != 1):
        bad = int(np.flatnonzero(tested != 1)[0])
        raise InvalidInputError(f"folds: every row must be tested exactly once; row {bad} is tested "
                                f"{tested[bad]} times")
    return checked


def out_of_fold_scores(fit: Callable[[RoutingData], Scorer], data: RoutingData,
                       folds: Sequence[Fold]) -> np.ndarray:
    """One score per row, each from a router that never saw that row in training.

    For each fold, ``fit(data.take(train))`` returns a scorer, and ``scorer(data.take(test))`` scores the
    test rows. Scores from different folds come from different models; as usual for out-of-fold
    evaluation, they are ranked together.

    Args:
        fit: trains a router on a :class:`RoutingData` and returns its scorer.
        data: all rows.
        folds: :class:`Fold` s (or (train, test) pairs) whose test sets partition the rows.

    Returns:
        (N,) float64 strong scores.

    Raises:
        InvalidInputError: ``data`` is not a RoutingData, the folds are not a partition (or a fold's train
            and test share rows), or a scorer returns the wrong shape or a non-finite score.
    """
    if not isinstance(data, RoutingData):
        raise InvalidInputError(f"data must be a RoutingData, got {type(data).__name__}")
    if not callable(fit):
        raise InvalidInputError(f"fit must be callable, got {type(fit).__name__}")
    scores = np.empty(len(data))
    for i, (train, test) in enumerate(_check_folds(folds, len(data))):
        scorer = fit(data.take(train))
        if not callable(scorer):
            raise InvalidInputError(f"fit must return a scorer (a callable) for folds[{i}], got "
                                    f"{type(scorer).__name__}")
        got = np.asarray(scorer(data.take(test)))
        if got.shape != (test.size,) or got.dtype.kind not in "biuf":
            raise InvalidInputError(f"the scorer of folds[{i}] must return ({test.size},) numbers, got "
                                    f"{got.dtype} {got.shape}")
        if not np.all(np.isfinite(got)):
            raise InvalidInputError(f"the scorer of folds[{i}] returned NaN or infinite scores")
        scores[test] = got
    return scores
