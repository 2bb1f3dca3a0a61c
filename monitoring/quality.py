"""Live quality from labelled records, and an estimate before the labels come.

Figures are computed per time window and per cell of the ``by`` columns (``version``, ``variant``,
``arm``, ``group``); with ``group`` among them each window also has the figures of every group together
(``group = "*"``). One long frame holds them: ``window`` (its start, UTC), the ``by`` columns, ``metric``,
``value``, ``n`` (rows the figure is computed on) and ``estimate``.

* classifiers: ``accuracy`` and ``macro_f1`` on the labelled rows; before labels, ``accuracy`` estimated
  as the mean top-class confidence of every answer in the cell (confidence-based performance estimation:
  right for a calibrated model, and marked ``estimate=True`` wherever it appears).
* regressors: ``mae`` on the labelled rows (no estimate: an interval says how sure one answer is, not how
  wrong a window is).

:func:`estimate_vs_real` puts the estimate made from all answers beside the real figure once labels
come, with their difference, so that an estimate is always checked.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

from civicml.errors import InvalidInput
from registry import parse_window  # the one grammar of a window: 30m, 12h, 7d, 2w

ORIGIN = pd.Timestamp("1970-01-05", tz="UTC").timestamp()  # a Monday: weekly windows start on Mondays
BY = ("version", "variant", "arm", "group")
ALL = "*"


def window_starts(times, window: str | float) -> np.ndarray:
    """The start (epoch seconds) of the window each time falls in; windows are aligned on Monday 1970-01-05."""
    width = parse_window(window)
    t = np.asarray(times, dtype=float)
    return ORIGIN + np.floor((t - ORIGIN) / width) * width


def window_label(start: float) -> str:
    return pd.Timestamp(start, unit="s", tz="UTC").strftime("%Y-%m-%dT%H:%MZ")


def infer_task(answers: Iterable) -> str:
    values = [a for a in answers if a is not None]
    numeric = values and all(isinstance(a, (int, float, np.number)) and not isinstance(a, (bool, np.bool_))
                             for a in values)
    return "regression" if numeric else "classification"


def _check_by(by) -> tuple[str, ...]:
    by = tuple(by)
    bad = [b for b in by if b not in BY]
    if bad:
        raise InvalidInput(f"quality by '{bad[0]}': choose among {', '.join(BY)}")
    return by


def _cells(frame: pd.DataFrame, by: tuple[str, ...], window: str | float):
    frame = frame.assign(window=window_starts(frame["time"], window),
                         group=frame["group"].fillna("-").astype(str))
    for b in by:
        frame[b] = frame[b].astype(str)
    keys = ["window", *by]
    yield from frame.groupby(keys, sort=True)
    if "group" in by:
        rolled = frame.assign(group=ALL)
        yield from rolled.groupby(keys, sort=True)


def _classification(labelled: pd.DataFrame) -> dict[str, float]:
    truth = labelled["outcome"].astype(str).to_numpy()
    said = labelled["answer"].astype(str).to_numpy()
    return {"accuracy": float(np.mean(truth == said)), "macro_f1": macro_f1(truth, said)}


def macro_f1(truth: np.ndarray, said: np.ndarray) -> float:
    """Mean F1 over the classes that occur in either ``truth`` or ``said`` (scikit-learn's ``macro``,
    ``zero_division=0``)."""
    scores = []
    for label in np.union1d(truth, said):
        tp = np.sum((truth == label) & (said == label))
        fp, fn = np.sum((truth != label) & (said == label)), np.sum((truth == label) & (said != label))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def _mae(labelled: pd.DataFrame) -> dict[str, float]:
    truth = pd.to_numeric(labelled["outcome"], errors="coerce").to_numpy(dtype=float)
    said = pd.to_numeric(labelled["answer"], errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(truth) & np.isfinite(said)
    return {"mae": float(np.mean(np.abs(truth[ok] - said[ok])))} if ok.any() else {}


def live_quality(records: pd.DataFrame, window: str | float = "7d", by=("version", "arm", "group"),
                 task: str | None = None) -> pd.DataFrame:
    """Quality per window and cell (see the module's docstring); empty cells are absent."""
    by = _check_by(by)
    columns = ["window", *by, "metric", "value", "n", "estimate"]
    if records is None or len(records) == 0:
        return pd.DataFrame(columns=columns)
    task = task or infer_task(records["answer"])
    rows = []
    for key, cell in _cells(records, by, window):
        base = dict(zip(["window", *by], key))
        base["window"] = window_label(base["window"])
        labelled = cell[cell["outcome"].notna()]
        if len(labelled):
            figures = _classification(labelled) if task == "classification" else _mae(labelled)
            rows += [{**base, "metric": m, "value": v, "n": len(labelled), "estimate": False}
                     for m, v in figures.items()]
        if task == "classification":
            confidence = pd.to_numeric(cell["confidence"], errors="coerce").dropna()
            if len(confidence):
                rows.append({**base, "metric": "accuracy", "value": float(confidence.mean()),
                             "n": len(confidence), "estimate": True})
    return pd.DataFrame(rows, columns=columns)


def estimate_vs_real(records: pd.DataFrame, window: str | float = "7d", by=("version", "arm", "group"),
                     min_labelled: int = 1, figures: pd.DataFrame | None = None) -> pd.DataFrame:
    """For each cell with at least ``min_labelled`` labels: the accuracy estimated from every answer's
    confidence, the real accuracy on the labelled ones, and ``gap`` = estimated - real. ``figures``: what
    :func:`live_quality` already gave for the same records, window and ``by``."""
    if figures is None:
        figures = live_quality(records, window, by, task="classification")
    keys = ["window", *_check_by(by)]
    columns = [*keys, "estimated", "real", "gap", "labelled", "answers"]
    accuracy = figures[figures["metric"] == "accuracy"]
    if accuracy.empty:
        return pd.DataFrame(columns=columns)
    est = accuracy[accuracy["estimate"]].rename(columns={"value": "estimated", "n": "answers"})
    real = accuracy[~accuracy["estimate"]].rename(columns={"value": "real", "n": "labelled"})
    joined = est[[*keys, "estimated", "answers"]].merge(real[[*keys, "real", "labelled"]], on=keys)
    joined = joined[joined["labelled"] >= min_labelled]
    joined = joined.assign(gap=joined["estimated"] - joined["real"])
    return joined[columns].reset_index(drop=True)
