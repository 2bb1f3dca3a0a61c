"""Equity across groups: is a version nearly as good for every district as for the best one, and no worse for
any district than the champion it would replace?

The policy's ``equity:`` section (:class:`registry.policy.EquitySpec`) names a column of the held-out set
(``by``, ``district`` by default), a metric (the policy's by default) and two bounds, each judged with a
bootstrap interval, so that one district's noise neither refuses a version nor lets it through alone:

* ``min_ratio``: each group's figure over the best group's (an impact ratio; for an error such as ``mae``
  the best group's over the group's, so 1 is always the best and lower is always worse). A group is refused
  only when its interval lies clearly below the floor: its upper bound < ``min_ratio``;
* ``max_group_regression``: how much worse than under the champion a group may be, in the metric's units,
  both models scored on the same resampled rows (a paired bootstrap). A group is refused only when the lower
  bound of its worsening is above the margin.

Groups with fewer than ``min_count`` held-out rows are reported, with their count and figures, and never
judged; nor is one of them the best group (five rows answered right are no yardstick).

The per-group figures are fairlearn's ``MetricFrame`` (``by_group``). The intervals come from a seeded,
stratified bootstrap in numpy: each group's rows drawn with replacement ``resamples`` times, keeping its count,
and the same draws for the candidate and the champion. fairlearn's own bootstrap (``MetricFrame(n_boot=...)``)
draws from the whole set and gives intervals of the by-group figures only: not of a group's ratio to the best
group of the same draw, nor of a paired difference with another model, which are what the gates judge.
Accuracy, macro-F1, MAE and RMSE are computed for all draws at once; any other metric once per draw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

MISSING = "(missing)"  # the group of rows whose group column is empty
FOUR_FIFTHS = 0.8  # the customary impact-ratio floor (the "four-fifths rule"): the policy's default min_ratio


@dataclass(frozen=True)
class GroupFigure:
    """One group's figures: its ``value`` with ``interval``; ``ratio`` to the best judged group; how much
    worse than under the champion (``worse_by``, positive = worse); ``judged``: it has ``min_count`` rows."""

    group: str
    rows: int
    value: float
    interval: tuple[float, float]
    judged: bool
    ratio: float | None = None
    ratio_interval: tuple[float, float] | None = None
    champion: float | None = None
    worse_by: float | None = None
    worse_interval: tuple[float, float] | None = None


@dataclass(frozen=True)
class EquityReport:
    """The figures of one version per group of one column, on one held-out set."""

    column: str
    metric: str
    confidence: float
    resamples: int
    min_count: int
    best: str | None  # the best judged group, None when no group has min_count rows
    groups: tuple[GroupFigure, ...]

    @property
    def judged(self) -> list[GroupFigure]:
        return [g for g in self.groups if g.judged]

    @property
    def small(self) -> list[GroupFigure]:
        return [g for g in self.groups if not g.judged]

    def below_ratio(self, floor: float) -> list[GroupFigure]:
        """Judged groups whose ratio to the best is clearly under ``floor`` (upper bound below it), worst first."""
        found = [g for g in self.judged if g.ratio_interval is not None and g.ratio_interval[1] < floor]
        return sorted(found, key=lambda g: g.ratio_interval[1])

    def regressed(self, margin: float) -> list[GroupFigure]:
        """Judged groups clearly worse than under the champion by more than ``margin`` (lower bound above it)."""
        found = [g for g in self.judged if g.worse_interval is not None and g.worse_interval[0] > margin]
        return sorted(found, key=lambda g: -g.worse_interval[0])

    def to_dict(self) -> dict[str, Any]:
        """As the model card and the audit trail keep it (``kind: equity``)."""
        return {"kind": "equity", "column": self.column, "metric": self.metric, "confidence": self.confidence,
                "resamples": self.resamples, "min_count": self.min_count, "best": self.best,
                "groups": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(g).items()}
                           for g in self.groups]}


def impact_ratio(value: float, best: float, lower_is_better: bool) -> float:
    """``value`` as a share of ``best``: 1 for the best group, lower for worse ones (nan when undefined)."""
    if value == best:
        return 1.0
    if lower_is_better:
        return float(best / value) if value > 0 else float("nan")
    return float(value / best) if best > 0 else float("nan")


def impact_ratios(values: dict[str, float], rows: dict[str, int], lower_is_better: bool,
                  min_count: int) -> dict[str, float]:
    """Each group's :func:`impact_ratio` to the best group with at least ``min_count`` rows ({} if none has)."""
    judged = {g: v for g, v in values.items() if rows.get(g, 0) >= min_count and v == v}
    if not judged:
        return {}
    best = (min if lower_is_better else max)(judged.values())
    return {g: impact_ratio(v, best, lower_is_better) for g, v in values.items()}


def by_group(metric: str, truth, answers, groups: pd.Series) -> pd.DataFrame:
    """``metric`` and row count per group (fairlearn's ``MetricFrame``); index: the groups, sorted."""
    from fairlearn.metrics import MetricFrame, count

    from projects.metrics import compute

    frame = MetricFrame(metrics={"value": lambda t, p: compute(metric, t, p), "rows": count},
                        y_true=np.asarray(truth), y_pred=np.asarray(answers), sensitive_features=groups)
    table = frame.by_group
    table.index = table.index.astype(str)
    return table.astype({"rows": int})


def draws(groups: pd.Series, resamples: int, seed: int) -> dict[str, np.ndarray]:
    """Row positions of each group, drawn with replacement: (resamples x the group's rows) per group, seeded."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, positions in sorted(groups.groupby(groups, sort=True).indices.items(), key=lambda kv: str(kv[0])):
        positions = np.asarray(positions)
        out[str(name)] = positions[rng.integers(0, len(positions), size=(resamples, len(positions)))]
    return out


def resampled(metric: str, truth: np.ndarray, answers: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``metric`` on each draw (a row of ``rows``, positions into ``truth`` and ``answers``): one figure each."""
    if metric == "accuracy":
        return (truth[rows] == answers[rows]).mean(axis=1)
    if metric in ("mae", "rmse"):
        errors = answers.astype(float)[rows] - truth.astype(float)[rows]
        return np.abs(errors).mean(axis=1) if metric == "mae" else np.sqrt((errors ** 2).mean(axis=1))
    if metric == "macro_f1":
        return _macro_f1(truth, answers, rows)
    from projects.metrics import compute

    return np.array([compute(metric, truth[r], answers[r]) for r in rows])


def _macro_f1(truth: np.ndarray, answers: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """scikit-learn's macro F1 (over the classes each draw's truth or answers hold) of every draw at once."""
    _, codes = np.unique(np.concatenate([truth.astype(str), answers.astype(str)]), return_inverse=True)
    k = int(codes.max()) + 1
    t, p = codes[:len(truth)][rows], codes[len(truth):][rows]
    offset = np.arange(len(rows))[:, None] * k

    def counted(values):
        return np.bincount(values.ravel(), minlength=len(rows) * k).reshape(len(rows), k)

    true, said = counted(t + offset), counted(p + offset)
    hit = counted((t + offset)[t == p])
    present = (true + said) > 0
    f1 = np.where(present, 2 * hit / np.maximum(true + said, 1), 0.0)
    return f1.sum(axis=1) / present.sum(axis=1)


def _interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2
    low, high = np.nanquantile(samples, [tail, 1 - tail]) if np.isfinite(samples).any() else (np.nan, np.nan)
    return float(low) + 0.0, float(high) + 0.0  # + 0.0: no "-0.000" for a group that did not change


def group_labels(frame: pd.DataFrame, column: str) -> pd.Series:
    """The held-out rows' groups as text (empty ones: :data:`MISSING`), indexed 0..n-1."""
    if column not in frame.columns:
        raise ValueError(f"the held-out set has no column '{column}' (the equity section's 'by'); it has "
                         f"{', '.join(map(str, frame.columns))}")
    values = frame[column].reset_index(drop=True)
    return values.astype(object).where(values.notna(), MISSING).astype(str).rename(column)


def measure(spec: Any, metric: str, truth, answers, groups: pd.Series, champion=None) -> EquityReport:
    """The :class:`EquityReport` of ``answers`` (and, given the ``champion``'s answers to the same rows, how
    much worse each group fares than under it). ``spec``: :class:`registry.policy.EquitySpec` (``min_count``,
    ``resamples``, ``confidence``, ``seed``)."""
    from projects.metrics import lower_is_better

    lower = lower_is_better(metric)
    truth, answers = np.asarray(truth), np.asarray(answers)
    table = by_group(metric, truth, answers, groups)
    rows = table["rows"].to_dict()
    values = table["value"].astype(float).to_dict()
    ratios = impact_ratios(values, rows, lower, spec.min_count)
    drawn = draws(groups, spec.resamples, spec.seed)
    samples = {g: resampled(metric, truth, answers, drawn[g]) for g in table.index}
    judged = [g for g in table.index if rows[g] >= spec.min_count and values[g] == values[g]]
    best = (min if lower else max)(judged, key=values.get) if judged else None
    best_drawn = (np.min if lower else np.max)(np.vstack([samples[g] for g in judged]), axis=0) if judged else None
    before = {}
    if champion is not None:
        champion = np.asarray(champion)
        old = by_group(metric, truth, champion, groups)["value"].astype(float).to_dict()
        before = {g: (old[g], resampled(metric, truth, champion, drawn[g])) for g in table.index}
    figures = []
    for g in table.index:
        figure = {"group": g, "rows": int(rows[g]), "value": values[g],
                  "interval": _interval(samples[g], spec.confidence), "judged": g in judged}
        if best is not None:
            each = np.array([impact_ratio(v, b, lower) for v, b in zip(samples[g], best_drawn)])
            figure.update(ratio=ratios.get(g), ratio_interval=_interval(each, spec.confidence))
        if g in before:
            value, drawn_before = before[g]
            sign = 1.0 if lower else -1.0  # worse_by > 0: the candidate is worse than the champion
            figure.update(champion=value, worse_by=sign * (values[g] - value) + 0.0,
                          worse_interval=_interval(sign * (samples[g] - drawn_before), spec.confidence))
        figures.append(GroupFigure(**figure))
    return EquityReport(groups.name or "group", metric, spec.confidence, spec.resamples, spec.min_count, best,
                        tuple(figures))


__all__ = ["FOUR_FIFTHS", "EquityReport", "GroupFigure", "by_group", "group_labels", "impact_ratio", "impact_ratios", "measure"]
