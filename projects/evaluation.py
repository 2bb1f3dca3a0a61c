"""Metrics and plots of one fitted model on one data set."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn import metrics as skm


def classification_metrics(y_true, y_pred, labels=None) -> dict[str, float]:
    labels = list(labels) if labels is not None else sorted(set(np.asarray(y_true)) | set(np.asarray(y_pred)))
    recall = skm.recall_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    out = {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "macro_f1": float(skm.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
    }
    out.update({f"recall_{label}": float(r) for label, r in zip(labels, recall)})
    return out


def regression_metrics(y_true, y_pred) -> dict[str, float]:
    y_true = np.asarray(y_true, dtype=float)
    y_pred = np.asarray(y_pred, dtype=float)
    err = y_pred - y_true
    nonzero = np.abs(y_true) > 1e-9
    return {
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err ** 2))),
        "mape": float(np.mean(np.abs(err[nonzero] / y_true[nonzero])) * 100) if nonzero.any() else float("nan"),
    }


def evaluate(task: str, y_true, y_pred, labels=None) -> dict[str, float]:
    if task == "classification":
        return classification_metrics(y_true, y_pred, labels)
    if task == "regression":
        return regression_metrics(y_true, y_pred)
    raise ValueError(f"unknown task {task!r}")


def confusion_matrix_figure(y_true, y_pred, labels, title: str = "Confusion matrix"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = skm.confusion_matrix(y_true, y_pred, labels=labels)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(labels), 0.8 + 0.7 * len(labels)))
    skm.ConfusionMatrixDisplay(cm, display_labels=labels).plot(ax=ax, colorbar=False, xticks_rotation=45)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def curve_figure(history: list[tuple[int, float]], metric: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    steps, values = zip(*history) if history else ((), ())
    ax.plot(steps, values, marker="o")
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.set_title(f"validation {metric} per step")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig

