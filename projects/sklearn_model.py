"""A fitted scikit-learn pipeline as a CivicML model, logged in the skops format (no pickle).

Every scikit-learn family (311 routing, tabular use cases, compressed variants)
logs through :class:`SklearnModel`: skops lists the types a saved pipeline
holds, and any type outside the trusted prefixes (scikit-learn, NumPy, SciPy,
builtins, plus what a subclass adds, such as CivicML's column transformers)
refuses the log instead of becoming something a loader must trust blindly.
Requirements are pinned explicitly: MLflow would otherwise infer them in a
subprocess (~4 s a model).

Two facts travel with the model in its MLmodel metadata: ``baseline``, the trivial
answers learnt from the training labels (:func:`projects.metrics.baseline_facts`; the
promotion's baseline gate scores it on the held-out set), and ``decision_threshold``
when :func:`with_decision_threshold` chose one on the validation part (the pipeline's
last step is then scikit-learn's ``FixedThresholdClassifier``, so ``predict`` applies it
wherever the model is loaded).
"""

from __future__ import annotations

import pickle
from importlib.metadata import version

import numpy as np
import pandas as pd

from projects.base import FittedModel

SAFE_PREFIXES = ("sklearn.", "numpy.", "scipy.", "builtins.", "collections.")


def skops_trusted_types(obj, prefixes: tuple[str, ...] = SAFE_PREFIXES) -> list[str]:
    """The types skops must trust to load ``obj``; ``TypeError`` if one is outside ``prefixes``."""
    import skops.io

    untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(obj))
    unsafe = [t for t in untrusted if not t.startswith(prefixes)]
    if unsafe:
        raise TypeError(f"model holds types that skops should not trust: {unsafe}")
    return untrusted


def sklearn_requirements(*more: str) -> list[str]:
    """Pinned requirements of a logged scikit-learn model (plus ``more`` distributions)."""
    dists = ("mlflow", "scikit-learn", "skops", "numpy", "scipy", "pandas", *more)
    return [f"{dist}=={version(dist)}" for dist in dists]


def _scores(estimator, X) -> tuple[np.ndarray, str]:
    """Scores toward ``classes_[1]`` and the response they came from (probabilities when there are)."""
    if hasattr(estimator, "predict_proba"):
        try:
            return estimator.predict_proba(X)[:, 1], "predict_proba"
        except AttributeError:  # SVC without probability estimates
            pass
    return np.asarray(estimator.decision_function(X)).ravel(), "decision_function"


def with_decision_threshold(pipeline, valid_X: pd.DataFrame, valid_y, metric: str):
    """``(pipeline, threshold)``: for a fitted binary classifier, the threshold on its score toward
    ``classes_[1]`` that scores best on ``metric`` over the validation rows, applied by the returned
    pipeline's ``predict``; the pipeline unchanged (threshold None) when the default threshold is as good."""
    from sklearn.frozen import FrozenEstimator
    from sklearn.model_selection import FixedThresholdClassifier
    from sklearn.pipeline import Pipeline

    from projects.metrics import compute

    final = pipeline.steps[-1][1]
    classes = getattr(final, "classes_", None)
    if classes is None or len(classes) != 2 or len(valid_y) == 0:
        return pipeline, None
    features = Pipeline(pipeline.steps[:-1]) if len(pipeline.steps) > 1 else None
    X = features.transform(valid_X) if features is not None else valid_X
    scores, response = _scores(final, X)
    y = np.asarray(valid_y)
    default = 0.5 if response == "predict_proba" else 0.0
    best_value = compute(metric, y, pipeline.predict(valid_X))
    best = None
    for t in np.unique(np.quantile(scores, np.linspace(0.01, 0.99, 99))):
        value = compute(metric, y, np.where(scores >= t, classes[1], classes[0]))
        if value > best_value + 1e-12 or (best is not None and value == best_value
                                          and abs(t - default) < abs(best - default)):
            best_value, best = value, float(t)
    if best is None:
        return pipeline, None
    fixed = FixedThresholdClassifier(FrozenEstimator(final), threshold=best, response_method=response).fit(X, y)
    return Pipeline(pipeline.steps[:-1] + [(pipeline.steps[-1][0], fixed)]), best


class SklearnModel(FittedModel):
    """A fitted pipeline; ``trusted_prefixes`` are the type prefixes its skops file may hold. ``baseline``
    (the trivial answer of the training labels) and ``decision_threshold`` are logged in its metadata."""

    trusted_prefixes: tuple[str, ...] = SAFE_PREFIXES

    def __init__(self, pipeline, baseline=None, decision_threshold: float | None = None):
        self.pipeline = pipeline
        self.baseline = baseline
        self.decision_threshold = decision_threshold

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.pipeline.predict(X)

    def predict_proba(self, X: pd.DataFrame):
        if hasattr(self.pipeline, "predict_proba"):
            try:
                return self.pipeline.predict_proba(X)
            except AttributeError:  # SVC without probability estimates
                return None
        return None

    def size_bytes(self) -> int:
        return len(pickle.dumps(self.pipeline))

    def log_model(self, name: str, input_example: pd.DataFrame, metadata: dict) -> str:
        import mlflow
        from mlflow.models import infer_signature

        trusted = skops_trusted_types(self.pipeline, self.trusted_prefixes)
        metadata = dict(metadata)
        if self.baseline is not None:
            metadata["baseline"] = self.baseline
        if self.decision_threshold is not None:
            metadata["decision_threshold"] = self.decision_threshold
        signature = infer_signature(input_example, self.predict(input_example))
        info = mlflow.sklearn.log_model(self.pipeline, name=name, signature=signature, input_example=input_example,
                                        metadata=metadata, skops_trusted_types=trusted,
                                        pip_requirements=sklearn_requirements())
        return info.model_uri


def log_background(model_uri: str | None, rows: pd.DataFrame, seed: int = 0, size: int = 200, *,
                   tracking_uri: str | None = None) -> bool:
    """Log a seeded sample of (masked) training rows into the logged model's folder as the reference its
    explanations are measured against (serving reads ``explain/background.parquet``). Any model family;
    a failure is logged and the model is kept (explanations then fall back to the input example)."""
    import logging
    import tempfile
    from pathlib import Path

    import mlflow

    if not model_uri or not str(model_uri).startswith("models:/m-") or rows is None or not len(rows):
        return False
    try:
        with tempfile.TemporaryDirectory() as tmp:
            sample = rows.sample(min(size, len(rows)), random_state=seed).reset_index(drop=True)
            (Path(tmp) / "explain").mkdir()
            sample.to_parquet(Path(tmp) / "explain" / "background.parquet", index=False)
            mlflow.MlflowClient(tracking_uri=tracking_uri).log_model_artifacts(str(model_uri)[len("models:/"):], tmp)
        return True
    except Exception as err:  # noqa: BLE001 - explanations fall back; training goes on
        logging.getLogger("civicml.training").warning("no explanation background logged: %s", err)
        return False


__all__ = ["SAFE_PREFIXES", "SklearnModel", "log_background", "sklearn_requirements", "skops_trusted_types",
           "with_decision_threshold"]
