"""The evaluation table: every router beside random routing, the oracle and the two fixed policies.

:class:`Report` measures named scores on one set of rows: APGR with a bootstrap interval, CPT(50%) and
CPT(80%), and the share of strong calls and the cost saving needed for 90% and 95% of the strong model's
quality. Always-weak and always-strong routing are shown on the same rows. :meth:`Report.table` renders
plain text in a fixed format; :meth:`Report.to_dict` gives the same figures for JSON.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tinydancer.checks import integer, real
from tinydancer.errors import InvalidInputError
from tinydancer.evaluation.data import RoutingData
from tinydancer.evaluation.metrics import (
    GPT4_PRICE,
    MIXTRAL_PRICE,
    _vectors,
    apgr,
    bootstrap,
    cost_saving,
    cpt,
    oracle_score,
    random_score,
    share_for_quality,
)

__all__ = ["ScorerResult", "Report", "reference_scores"]


def reference_scores(data: RoutingData) -> dict[str, np.ndarray]:
    """The scores every router is compared with, on the rows of ``data``.

    Returns:
        ``{"prompt length": log(1 + prompt_chars), "random": a constant, "oracle": strong - weak}``; the
        first ranks the rows as ``log(prompt_chars)`` does (longer prompts to the strong model first).
    """
    if not isinstance(data, RoutingData):
        raise InvalidInputError(f"data must be a RoutingData, got {type(data).__name__}")
    return {
        "prompt length": np.log1p(data.prompt_chars.astype(np.float64)),
        "random": random_score(len(data)),
        "oracle": oracle_score(data.strong, data.weak),
    }


@dataclass(frozen=True)
class ScorerResult:
    """The figures of one score on the report's rows; shares and savings are fractions, NaN when not reached.

    Attributes:
        name: the score's name.
        apgr, apgr_low, apgr_high: APGR and its bootstrap interval.
        cpt50, cpt80: the share of strong calls at which PGR reaches 50% and 80%.
        share90, share95: the share of strong calls that reaches 90% / 95% of the strong model's quality.
        saving90, saving95: the cost saving against always-strong at those shares.
    """

    name: str
    apgr: float
    apgr_low: float
    apgr_high: float
    cpt50: float
    cpt80: float
    share90: float
    saving90: float
    share95: float
    saving95: float


def _percent(value: float, never: str = "never") -> str:
    return never if math.isnan(value) else f"{100.0 * value:.1f}%"


def _number(value: float, digits: int = 3) -> str:
    return "nan" if math.isnan(value) else f"{value:.{digits}f}"


def _json(value: Any) -> Any:
    """``value`` with NaN as None, for JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


@dataclass(frozen=True)
class Report:
    """Routing quality of named scores on one set of rows (build it with :meth:`compute` or :meth:`for_data`).

    Attributes:
        name: what the rows are (a dataset and protocol, say).
        n: the number of rows.
        q_strong, q_weak: mean quality of always-strong and always-weak routing.
        strong_cost, weak_cost: the cost of one call to each model.
        alpha: 1 - the confidence level of the APGR intervals.
        n_boot, seed: the bootstrap's resamples and seed (the same resamples for every score).
        results: one :class:`ScorerResult` per score, in the order given.
    """

    name: str
    n: int
    q_strong: float
    q_weak: float
    strong_cost: float
    weak_cost: float
    alpha: float
    n_boot: int
    seed: int
    results: tuple[ScorerResult, ...]

    @classmethod
    def compute(cls, strong: Any, weak: Any, scores: Mapping[str, Any], *, name: str = "",
                strong_cost: float = GPT4_PRICE, weak_cost: float = MIXTRAL_PRICE, n_boot: int = 1000,
                seed: int = 0, alpha: float = 0.05) -> Report:
        """Measure each of ``scores`` on the rows (strong, weak).

        Args:
            strong, weak: (N,) each model's quality per row (booleans or graded scores).
            scores: name -> (N,) strong scores (higher: strong model first).
            name: a title for the rows.
            strong_cost, weak_cost: the cost of one call (default: RouteLLM's published prices per million
                tokens, i.e. the same tokens per call).
            n_boot, seed, alpha: the bootstrap of APGR (:func:`~tinydancer.evaluation.metrics.bootstrap`).

        Returns:
            The report.

        Raises:
            InvalidInputError: bad arrays or settings (the message names them), no scores, or both models
                of equal mean quality (PGR undefined).
        """
        if not isinstance(name, str):
            raise InvalidInputError(f"name must be a str, got {type(name).__name__}")
        if not isinstance(scores, Mapping) or not scores:
            raise InvalidInputError("scores must be a non-empty mapping of name -> (N,) scores")
        s, w = _vectors(strong=strong, weak=weak)
        strong_price = real(strong_cost, "strong_cost", 0.0, low_open=True, error=InvalidInputError)
        weak_price = real(weak_cost, "weak_cost", 0.0, error=InvalidInputError)
        count = integer(n_boot, "n_boot", 1, error=InvalidInputError)
        seed = integer(seed, "seed", 0, error=InvalidInputError)
        level = real(alpha, "alpha", 0.0, 1.0, low_open=True, high_open=True, error=InvalidInputError)
        results = []
        for key, values in scores.items():
            if not isinstance(key, str):
                raise InvalidInputError(f"scores: names must be str, got {key!r}")
            (score,) = _vectors(**{f"scores[{key!r}]": values})
            if score.size != s.size:
                raise InvalidInputError(f"scores[{key!r}] has {score.size} values but strong has {s.size}")
            value, low, high = bootstrap(apgr, score, s, w, n_boot=count, seed=seed, alpha=level)
            share90 = share_for_quality(score, s, w, 0.9)
            share95 = share_for_quality(score, s, w, 0.95)
            results.append(ScorerResult(
                name=key, apgr=value, apgr_low=low, apgr_high=high,
                cpt50=cpt(score, s, w, 0.5), cpt80=cpt(score, s, w, 0.8),
                share90=share90, saving90=cost_saving(share90, strong_price, weak_price),
                share95=share95, saving95=cost_saving(share95, strong_price, weak_price)))
        return cls(name=name, n=int(s.size), q_strong=float(s.mean()), q_weak=float(w.mean()),
                   strong_cost=strong_price, weak_cost=weak_price, alpha=level, n_boot=count, seed=seed,
                   results=tuple(results))

    @classmethod
    def for_data(cls, data: RoutingData, scores: Mapping[str, Any] | None = None, **options: Any) -> Report:
        """:meth:`compute` on the rows of ``data``: the given scores, then :func:`reference_scores`.

        Args:
            data: the rows.
            scores: name -> (len(data),) scores of the routers to compare (e.g. ``{"router": ...}``).
            **options: passed to :meth:`compute`; ``name`` defaults to ``data.name``.

        Returns:
            The report.

        Raises:
            InvalidInputError: as for :meth:`compute`, or a score is named like a reference score.
        """
        references = reference_scores(data)
        given = dict(scores or {})
        clash = sorted(set(given) & set(references))
        if clash:
            raise InvalidInputError(f"scores: {', '.join(map(repr, clash))} is the name of a reference score")
        options.setdefault("name", data.name)
        return cls.compute(data.strong, data.weak, {**given, **references}, **options)

    def table(self) -> str:
        """The report as plain text, in a fixed format (3 decimals for APGR, 1 for percentages)."""
        confidence = f"{100.0 * (1.0 - self.alpha):g}%"
        always_weak = cost_saving(0.0, self.strong_cost, self.weak_cost)
        head = ["method", "APGR", f"{confidence} interval", "CPT(50%)", "CPT(80%)", "strong@90%", "saving@90%",
                "strong@95%", "saving@95%"]
        body = [[r.name, _number(r.apgr), f"[{_number(r.apgr_low)}, {_number(r.apgr_high)}]", _percent(r.cpt50),
                 _percent(r.cpt80), _percent(r.share90), _percent(r.saving90, "-"), _percent(r.share95),
                 _percent(r.saving95, "-")] for r in self.results]
        widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
        widths[0] = max(widths[0], len("always strong"))

        def line(cells: list[str]) -> str:
            first = cells[0].ljust(widths[0])
            return "  ".join([first, *(c.rjust(wd) for c, wd in zip(cells[1:], widths[1:], strict=True))]).rstrip()

        relative = self.q_weak / self.q_strong if self.q_strong else math.nan
        lines = [
            f"{self.name + ': ' if self.name else ''}{self.n} rows; quality of always-strong {self.q_strong:.4f}, "
            f"always-weak {self.q_weak:.4f}; cost per call: strong {self.strong_cost:g}, weak {self.weak_cost:g}",
            "",
            line(head),
            *(line(row) for row in body),
            f"{'always weak'.ljust(widths[0])}  quality {self.q_weak:.4f} ({_percent(relative, 'n/a')} of strong), "
            f"0.0% strong calls, saving {_percent(always_weak)}",
            f"{'always strong'.ljust(widths[0])}  quality {self.q_strong:.4f}, 100.0% strong calls, saving 0.0%",
            "",
            "APGR: area under the PGR curve over the share of strong calls (random 0.500)",
            f"{confidence} interval: bootstrap percentile, {self.n_boot} resamples of the rows",
            "CPT(x): share of strong calls at which PGR reaches x",
            "strong@q: share of strong calls reaching q of the strong model's quality; saving@q: cost saving there "
            "against always-strong",
        ]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """The report's figures as plain Python values (NaN as None), ready for ``json.dumps``."""
        return {
            "name": self.name,
            "rows": self.n,
            "strong_cost": self.strong_cost,
            "weak_cost": self.weak_cost,
            "confidence": 1.0 - self.alpha,
            "n_boot": self.n_boot,
            "seed": self.seed,
            "always_weak": {"quality": self.q_weak, "strong_share": 0.0,
                            "cost_saving": cost_saving(0.0, self.strong_cost, self.weak_cost)},
            "always_strong": {"quality": self.q_strong, "strong_share": 1.0, "cost_saving": 0.0},
            "scorers": {r.name: {k: _json(v) for k, v in asdict(r).items() if k != "name"} for r in self.results},
        }
