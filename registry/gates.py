"""Promotion gates: each looks at a candidate (and the current champion) and gives a verdict.

Gates re-evaluate models on a held-out set at promotion time; logged metrics are
never trusted alone.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from registry.store import LocalModel

LOWER_IS_BETTER = {"mae", "rmse", "mape", "latency_p95_ms"}


@dataclass(frozen=True)
class GateVerdict:
    gate: str
    passed: bool
    figure: float | None
    threshold: float | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"gate": self.gate, "passed": self.passed, "figure": self.figure, "threshold": self.threshold,
                "detail": self.detail}


def predicted_labels(output) -> np.ndarray:
    """Labels (or values) from whatever a pyfunc returns: array, Series, or a frame with a label column."""
    if isinstance(output, pd.DataFrame):
        for column in ("label", "prediction", "predictions"):
            if column in output.columns:
                return output[column].to_numpy()
        return output.iloc[:, 0].to_numpy()
    if isinstance(output, pd.Series):
        return output.to_numpy()
    return np.asarray(output).reshape(len(output), -1)[:, 0] if np.ndim(output) > 1 else np.asarray(output)


def score(metric: str, y_true, y_pred) -> float:
    from sklearn import metrics as skm

    if metric == "macro_f1":
        return float(skm.f1_score(y_true, y_pred, average="macro", zero_division=0))
    if metric == "accuracy":
        return float(skm.accuracy_score(y_true, y_pred))
    y_true = np.asarray(y_true, dtype=float)
    y_pred = np.asarray(y_pred, dtype=float)
    if metric == "mae":
        return float(np.mean(np.abs(y_pred - y_true)))
    if metric == "rmse":
        return float(np.sqrt(np.mean((y_pred - y_true) ** 2)))
    if metric == "mape":
        nz = np.abs(y_true) > 1e-9
        return float(np.mean(np.abs((y_pred[nz] - y_true[nz]) / y_true[nz])) * 100)
    raise ValueError(f"unknown metric '{metric}'")


@dataclass
class PromotionContext:
    """What gates look at; model evaluations are computed once and shared by all gates."""

    name: str
    candidate: LocalModel
    champion: LocalModel | None
    holdout: pd.DataFrame | None
    target: str | None
    _scores: dict = field(default_factory=dict)
    _models: dict = field(default_factory=dict)

    def model(self, which: LocalModel):
        key = which.version.version
        if key not in self._models:
            import mlflow.pyfunc

            self._models[key] = mlflow.pyfunc.load_model(str(which.path))
        return self._models[key]

    def features(self, which: LocalModel) -> pd.DataFrame:
        schema = self.model(which).metadata.get_input_schema()
        names = schema.input_names() if schema is not None and not schema.is_tensor_spec() else None
        return self.holdout[names] if names else self.holdout.drop(columns=[self.target])

    def evaluate(self, which: LocalModel, metric: str) -> float:
        key = (which.version.version, metric)
        if key not in self._scores:
            if self.holdout is None or self.target is None:
                raise ValueError("this gate needs a held-out data set")
            output = self.model(which).predict(self.features(which))
            self._scores[key] = score(metric, self.holdout[self.target].to_numpy(), predicted_labels(output))
        return self._scores[key]


class Gate(abc.ABC):
    name: str

    @abc.abstractmethod
    def check(self, ctx: PromotionContext) -> GateVerdict: ...


def _better_or_equal(metric: str, a: float, b: float) -> bool:
    return a <= b if metric in LOWER_IS_BETTER else a >= b


@dataclass
class MetricThreshold(Gate):
    """The candidate's ``metric`` on the held-out set reaches ``threshold``."""

    metric: str
    threshold: float
    name: str = "threshold"

    def check(self, ctx):
        value = ctx.evaluate(ctx.candidate, self.metric)
        ok = _better_or_equal(self.metric, value, self.threshold)
        word = "<=" if self.metric in LOWER_IS_BETTER else ">="
        return GateVerdict(f"{self.metric} {word} {self.threshold}", ok, value, self.threshold,
                           f"candidate {self.metric} {value:.4f} on held-out set")


@dataclass
class NoRegression(Gate):
    """The candidate is not worse than the champion by more than ``tolerance``, both scored on the same data."""

    metric: str
    tolerance: float = 0.0
    name: str = "no_regression"

    def check(self, ctx):
        candidate = ctx.evaluate(ctx.candidate, self.metric)
        if ctx.champion is None:
            return GateVerdict(f"{self.metric} vs champion", True, candidate, None, "no current champion")
        champion = ctx.evaluate(ctx.champion, self.metric)
        limit = champion + self.tolerance if self.metric in LOWER_IS_BETTER else champion - self.tolerance
        ok = _better_or_equal(self.metric, candidate, limit)
        return GateVerdict(f"{self.metric} vs champion", ok, candidate, limit,
                           f"candidate {candidate:.4f} vs champion v{ctx.champion.version.version} {champion:.4f}"
                           f" (tolerance {self.tolerance})")
