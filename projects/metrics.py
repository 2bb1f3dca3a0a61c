"""Metrics in one place: each has a name, a direction and how to compute it from labels or values.

Evaluation (training), tuning objectives, promotion gates and model cards all ask
this module; a use-case file may name any of them as its primary metric::

    from projects.metrics import compute, direction
    compute("macro_f1", y_true, y_pred)        # 0.83
    direction("mae")                           # "minimize"

Besides CivicML's own (``macro_f1``, ``accuracy``, ``mae``, ``rmse``, ``mape``),
every scikit-learn scorer name that is computed from predicted labels or values
works (``balanced_accuracy``, ``f1_weighted``, ``r2``, ``neg_mean_absolute_error``
...). Scorers that need probabilities (``roc_auc``, ``neg_log_loss``) are not
metrics of a prediction and are refused with a message.

This module imports nothing from CivicML and nothing heavy at import time, so
``registry`` may import it lazily without pulling in training code.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Metric:
    name: str
    direction: str  # "maximize" or "minimize"
    task: str  # "classification", "regression" or "any"
    compute: Callable[[np.ndarray, np.ndarray], float]

    @property
    def lower_is_better(self) -> bool:
        return self.direction == "minimize"


def _f1(average):
    def f(y_true, y_pred):
        from sklearn.metrics import f1_score

        return float(f1_score(y_true, y_pred, average=average, zero_division=0))
    return f


def _accuracy(y_true, y_pred):
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def _errors(y_true, y_pred):
    return np.asarray(y_pred, dtype=float) - np.asarray(y_true, dtype=float)


def _mae(y_true, y_pred):
    return float(np.mean(np.abs(_errors(y_true, y_pred))))


def _rmse(y_true, y_pred):
    return float(np.sqrt(np.mean(_errors(y_true, y_pred) ** 2)))


def _mape(y_true, y_pred):
    """Mean absolute percentage error (in %), over rows whose true value is not zero."""
    y_true = np.asarray(y_true, dtype=float)
    err = _errors(y_true, y_pred)
    nonzero = np.abs(y_true) > 1e-9
    return float(np.mean(np.abs(err[nonzero] / y_true[nonzero])) * 100) if nonzero.any() else float("nan")


OWN = {
    "macro_f1": Metric("macro_f1", "maximize", "classification", _f1("macro")),
    "accuracy": Metric("accuracy", "maximize", "classification", _accuracy),
    "mae": Metric("mae", "minimize", "regression", _mae),
    "rmse": Metric("rmse", "minimize", "regression", _rmse),
    "mape": Metric("mape", "minimize", "regression", _mape),
}
# Measured by CivicML itself rather than computed from predictions; listed for their direction.
MEASURED = {"latency_p95_ms": "minimize", "model_size_bytes": "minimize", "fit_seconds": "minimize"}


def _sklearn_metric(name: str) -> Metric | None:
    """A scikit-learn scorer by name, as a metric of predictions (``neg_*`` scorers keep their sign)."""
    from sklearn.metrics import get_scorer, get_scorer_names

    if name not in get_scorer_names():
        return None
    scorer = get_scorer(name)
    response = getattr(scorer, "_response_method", "predict")
    if response != "predict":
        return None
    func, sign, kwargs = scorer._score_func, scorer._sign, dict(scorer._kwargs)
    task = "regression" if func.__module__.endswith("_regression") else "classification"

    def compute(y_true, y_pred):
        return float(sign * func(y_true, y_pred, **kwargs))

    # A scorer is always "greater is better"; an error named without neg_ (max_error) has sign -1.
    return Metric(name, "maximize", task, compute)


def get(name: str) -> Metric:
    """The metric called ``name``; ``InvalidInput`` with a suggestion when there is none."""
    if name in OWN:
        return OWN[name]
    metric = _sklearn_metric(name)
    if metric is not None:
        return metric
    from civicml.errors import InvalidInput

    close = difflib.get_close_matches(name, names(), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise InvalidInput(f"unknown metric '{name}'{hint}: use {', '.join(OWN)} or a scikit-learn scorer "
                       f"computed from predictions")


def names() -> list[str]:
    """Every metric name this module accepts."""
    from sklearn.metrics import get_scorer, get_scorer_names

    extra = [n for n in get_scorer_names()
             if n not in OWN and getattr(get_scorer(n), "_response_method", "predict") == "predict"]
    return list(OWN) + sorted(extra)


def direction(name: str) -> str:
    """``maximize`` or ``minimize`` for a metric (or a measured figure such as ``latency_p95_ms``)."""
    if name in MEASURED:
        return MEASURED[name]
    return get(name).direction


def lower_is_better(name: str) -> bool:
    try:
        return direction(name) == "minimize"
    except Exception:  # noqa: BLE001 - a figure we do not know is taken as higher-is-better
        return False


def compute(name: str, y_true, y_pred) -> float:
    return get(name).compute(np.asarray(y_true), np.asarray(y_pred))


def known(name: str) -> bool:
    try:
        get(name)
        return True
    except Exception:  # noqa: BLE001
        return False


def evaluate(task: str, y_true, y_pred, labels=None, extra=()) -> dict[str, float]:
    """The standard metrics of ``task`` (plus per-class recall), and every metric named in ``extra``."""
    if task == "classification":
        from sklearn.metrics import recall_score

        labels = list(labels) if labels is not None else sorted(set(np.asarray(y_true)) | set(np.asarray(y_pred)))
        out = {"accuracy": compute("accuracy", y_true, y_pred),
               "macro_f1": float(_f1_labels(y_true, y_pred, labels))}
        recall = recall_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
        out.update({f"recall_{label}": float(r) for label, r in zip(labels, recall)})
    elif task in ("regression", "forecasting"):
        out = {name: compute(name, y_true, y_pred) for name in ("mae", "rmse", "mape")}
    else:
        raise ValueError(f"unknown task {task!r}")
    for name in extra:
        if name not in out:
            out[name] = compute(name, y_true, y_pred)
    return out


def _f1_labels(y_true, y_pred, labels):
    from sklearn.metrics import f1_score

    return f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)


# -- what a metric can be, and the answer that knows nothing --------------------------------------------
_UNIT_PREFIXES = ("accuracy", "balanced_accuracy", "f1", "precision", "recall", "jaccard", "top_k_accuracy")
# Metrics for which a binary classifier's decision threshold is worth choosing (the default 0.5 favours the
# majority class; these metrics weigh the minority class as much).
THRESHOLD_METRICS = ("macro_f1", "f1", "f1_macro", "balanced_accuracy")


def bounds(name: str) -> tuple[float, float]:
    """The range a metric's values lie in: (0, 1) for scores such as accuracy and F1, (0, inf) for errors,
    (-inf, inf) when CivicML does not know (``r2``, ``neg_*`` scorers: never below nothing)."""
    if name in ("macro_f1", "accuracy") or name.startswith(_UNIT_PREFIXES):
        return 0.0, 1.0
    if name in ("mae", "rmse", "mape") or name in MEASURED:
        return 0.0, float("inf")
    if name.startswith("neg_"):
        return float("-inf"), 0.0
    return float("-inf"), float("inf")


def baseline_facts(task: str, y) -> dict:
    """What the trivial baselines learn from labels ``y``: for classification the most frequent class (ties: the
    first in sorted order) and every class's frequency, for regression the mean and the median; plain values
    (they travel as YAML in a model's metadata)."""
    y = np.asarray(y)
    if task == "classification":
        values, counts = np.unique(y, return_counts=True)
        plain = [v.item() if isinstance(v, np.generic) else v for v in values]
        return {"majority": plain[int(np.argmax(counts))], "classes": plain,
                "frequencies": [float(c) / len(y) for c in counts]}
    y = y.astype(float)
    return {"mean": float(np.mean(y)), "median": float(np.median(y))}


GUESSES = 20  # draws whose scores are averaged for the guessing baseline (one draw varies by a few points)


def baseline_answers(facts: dict, metric: str, n: int) -> dict[str, list[np.ndarray]]:
    """The trivial baselines' answers for ``n`` rows, by what they do (:func:`baseline_facts`): the majority
    class for every row, and :data:`GUESSES` seeded draws guessing by the training class frequencies (a
    baseline's figure is the mean over its answers); for regression the median for ``mae`` (what minimises
    absolute error), else the mean."""
    if "majority" not in facts:
        value = facts["median"] if metric == "mae" else facts["mean"]
        return {f"the training {'median' if metric == 'mae' else 'mean'} {value:.4g} for every row":
                [np.full(n, value, dtype=float)]}
    out = {f"the majority class {facts['majority']!r} for every row":
           [np.array([facts["majority"]] * n, dtype=object)]}
    if facts.get("classes") and facts.get("frequencies"):
        p = np.asarray(facts["frequencies"], dtype=float)
        classes = np.array(facts["classes"], dtype=object)
        out["guessing by the training class frequencies"] = [
            classes[np.random.default_rng(seed).choice(len(classes), size=n, p=p / p.sum())]
            for seed in range(GUESSES)]
    return out


__all__ = ["Metric", "OWN", "THRESHOLD_METRICS", "bounds", "compute", "baseline_answers", "baseline_facts", "direction", "evaluate",
           "get", "known", "lower_is_better", "names"]
