"""Metrics and plots of one fitted model on one data set; the metrics themselves are in ``projects.metrics``."""

from __future__ import annotations

from sklearn import metrics as skm

from projects import metrics


def evaluate(task: str, y_true, y_pred, labels=None, extra=()) -> dict[str, float]:
    """The task's standard metrics (``projects.metrics``), plus every metric named in ``extra``."""
    return metrics.evaluate(task, y_true, y_pred, labels, extra)


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

