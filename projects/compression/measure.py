"""A parent and its variant measured side by side, in one process, on the same rows.

Both are loaded with plain ``mlflow.pyfunc.load_model`` (what any serving host
does) and called alternately, so machine load falls on both alike:

- size: bytes of the saved model's payload (weights, graph, code; not MLflow's examples and metadata);
- latency: p50 and p95 of ``predict`` over ``repeats`` calls at batch 1, 32 and 64 (after one untimed
  call of each at that batch size);
- quality: the use case's metric on the held-out set, and the loss vs the parent
  (positive = the variant is worse, in the metric's own units);
- agreement: the share of held-out rows where both give the same label (or, for
  regression, a prediction within 1% of the parent's); cosine: mean cosine of the
  two class-probability rows, where both give probabilities.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from civicml.answers import read_probabilities

LOWER_IS_BETTER = {"mae", "rmse", "mape"}
BATCHES = (1, 32, 64)


# What MLflow writes beside every model (examples, environment, metadata): not what the model costs to hold.
MODEL_FOLDER_EXTRAS = {"MLmodel", "input_example.json", "serving_input_example.json", "conda.yaml",
                       "python_env.yaml", "requirements.txt", "registered_model_meta"}


def folder_bytes(path: Path) -> int:
    """Bytes of a saved model's payload: weights, graph and code, without MLflow's examples and metadata."""
    return int(sum(p.stat().st_size for p in Path(path).rglob("*")
                   if p.is_file() and p.name not in MODEL_FOLDER_EXTRAS))


def model_input(model, frame: pd.DataFrame, target: str):
    """The held-out rows in the form ``model`` takes: its signature's columns, or one stacked tensor."""
    schema = model.metadata.get_input_schema()
    if schema is not None and schema.is_tensor_spec():
        column = frame.drop(columns=[target]).iloc[:, 0]
        return np.stack([np.asarray(v, dtype=schema.inputs[0].type) for v in column])
    names = schema.input_names() if schema is not None else [c for c in frame.columns if c != target]
    return frame[names].reset_index(drop=True)


def _rows(data, index):
    return data.iloc[index] if isinstance(data, pd.DataFrame) else data[index]


def _labels(output) -> np.ndarray:
    if isinstance(output, pd.DataFrame):
        column = "label" if "label" in output.columns else output.columns[0]
        return output[column].to_numpy()
    output = np.asarray(output)
    return output.reshape(len(output), -1)[:, 0] if output.ndim > 1 else output


def _probabilities(output) -> np.ndarray | None:
    found = read_probabilities(output) if isinstance(output, pd.DataFrame) else None
    return found[1] if found is not None else None


def score(metric: str, y_true, y_pred) -> float:
    from sklearn import metrics as skm

    if metric == "macro_f1":
        return float(skm.f1_score(np.asarray(y_true).astype(str), np.asarray(y_pred).astype(str), average="macro",
                                  zero_division=0))
    if metric == "accuracy":
        return float(np.mean(np.asarray(y_true).astype(str) == np.asarray(y_pred).astype(str)))
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    if metric == "mae":
        return float(np.mean(np.abs(y_pred - y_true)))
    if metric == "rmse":
        return float(np.sqrt(np.mean((y_pred - y_true) ** 2)))
    if metric == "mape":
        nz = np.abs(y_true) > 1e-9
        return float(np.mean(np.abs((y_pred[nz] - y_true[nz]) / y_true[nz])) * 100)
    raise ValueError(f"unknown metric '{metric}'")


@dataclass
class Comparison:
    metric: str
    rows: int
    parent: dict[str, float] = field(default_factory=dict)
    variant: dict[str, float] = field(default_factory=dict)
    agreement: float = float("nan")
    cosine: float | None = None

    @property
    def quality_loss(self) -> float:
        """How much worse the variant scores than the parent (metric units; negative = better)."""
        a, b = self.parent[self.metric], self.variant[self.metric]
        return (b - a) if self.metric in LOWER_IS_BETTER else (a - b)

    def speedup(self, batch: int) -> float:
        return self.parent[f"latency_b{batch}_p50_ms"] / max(self.variant[f"latency_b{batch}_p50_ms"], 1e-9)

    @property
    def size_reduction(self) -> float:
        return self.parent["size_bytes"] / max(self.variant["size_bytes"], 1.0)

    def to_metrics(self) -> dict[str, float]:
        """Flat MLflow metrics: the variant's own figures, ``parent_*`` beside them, and the ratios."""
        out = {k: float(v) for k, v in self.variant.items()}
        out.update({f"parent_{k}": float(v) for k, v in self.parent.items()})
        out.update({"quality_loss": self.quality_loss, "size_reduction": self.size_reduction,
                    "agreement": float(self.agreement), "holdout_rows": float(self.rows)})
        for batch in BATCHES:
            out[f"speedup_b{batch}"] = self.speedup(batch)
        if self.cosine is not None:
            out["cosine"] = float(self.cosine)
        return out

    def figure(self, title: str):
        """Bars: variant / parent for size and p50 latency at each batch, and both scores."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
        names = ["size"] + [f"p50 b{b}" for b in BATCHES] + [f"p95 b{b}" for b in BATCHES]
        keys = ["size_bytes"] + [f"latency_b{b}_p50_ms" for b in BATCHES] + [f"latency_b{b}_p95_ms" for b in BATCHES]
        ratios = [self.variant[k] / max(self.parent[k], 1e-12) for k in keys]
        left.bar(names, ratios, color=["#4c72b0" if r <= 1 else "#c44e52" for r in ratios])
        left.axhline(1.0, color="black", lw=0.8)
        left.set_ylabel("variant / parent")
        left.set_title("cost (lower is better)")
        right.bar(["parent", "variant"], [self.parent[self.metric], self.variant[self.metric]],
                  color=["#999999", "#55a868"])
        right.set_title(f"{self.metric} on held-out ({self.rows} rows); agreement {self.agreement:.3f}")
        fig.suptitle(title)
        fig.tight_layout()
        return fig


def _latencies(model, data, batch: int, repeats: int) -> list[float]:
    n = len(data)
    rng = np.random.default_rng(batch)
    out = []
    for _ in range(repeats):
        index = rng.integers(0, n, batch)
        rows = _rows(data, index)
        started = time.perf_counter()
        model.predict(rows)
        out.append((time.perf_counter() - started) * 1000)
    return out


def measure(parent_path: Path, variant_path: Path, holdout: pd.DataFrame, target: str, metric: str, *,
            repeats: dict[int, int] | None = None) -> Comparison:
    """Load both models, score both on ``holdout`` and time both at batch 1, 32 and 64, alternating."""
    import mlflow.pyfunc

    repeats = {1: 40, 64: 10, **(repeats or {})}
    repeats.setdefault(32, repeats[64])
    models = {"parent": mlflow.pyfunc.load_model(str(parent_path)),
              "variant": mlflow.pyfunc.load_model(str(variant_path))}
    inputs = {k: model_input(m, holdout, target) for k, m in models.items()}
    outputs = {k: m.predict(inputs[k]) for k, m in models.items()}  # also warms both up
    comparison = Comparison(metric, len(holdout))
    y = holdout[target].to_numpy()
    for key, path in (("parent", parent_path), ("variant", variant_path)):
        figures = getattr(comparison, key)
        figures["size_bytes"] = float(folder_bytes(Path(path)))
        figures[metric] = score(metric, y, _labels(outputs[key]))
    a, b = _labels(outputs["parent"]), _labels(outputs["variant"])
    if metric in LOWER_IS_BETTER:
        a, b = np.asarray(a, float), np.asarray(b, float)
        comparison.agreement = float(np.mean(np.abs(a - b) <= 0.01 * np.maximum(np.abs(a), 1e-9)))
    else:
        comparison.agreement = float(np.mean(a.astype(str) == b.astype(str)))
    pa, pb = _probabilities(outputs["parent"]), _probabilities(outputs["variant"])
    if pa is not None and pb is not None and pa.shape == pb.shape:
        cos = (pa * pb).sum(1) / np.maximum(np.linalg.norm(pa, axis=1) * np.linalg.norm(pb, axis=1), 1e-12)
        comparison.cosine = float(np.mean(cos))
    for batch in BATCHES:
        times: dict[str, list[float]] = {"parent": [], "variant": []}
        for key in times:  # untimed: first calls at a new batch size pay one-off set-up
            _latencies(models[key], inputs[key], batch, 1)
        for _ in range(repeats[batch]):  # alternate, one call each, so load falls on both alike
            for key in ("parent", "variant"):
                times[key] += _latencies(models[key], inputs[key], batch, 1)
        for key in times:
            figures = getattr(comparison, key)
            figures[f"latency_b{batch}_p50_ms"] = float(np.percentile(times[key], 50))
            figures[f"latency_b{batch}_p95_ms"] = float(np.percentile(times[key], 95))
    return comparison
