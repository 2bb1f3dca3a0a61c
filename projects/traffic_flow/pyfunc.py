"""Serving code of a traffic_flow model (an MLflow *models-from-code* file).

MLflow copies this file into the logged model and runs it on
``mlflow.pyfunc.load_model``; it imports only NumPy, pandas, MLflow and Paddle,
never CivicML's training code, and unpickles nothing.

Artifacts: ``program/inference.json`` + ``inference.pdiparams`` (the exported
MLP with its input scaling built in) and ``program/features.json`` (the column
order). Input: a frame with the feature columns as float64 (the signature's
"double"; extra columns are ignored).
Output: a 1-D float64 array, the next hour's vehicle count per row.

One ``paddle.inference`` predictor is cloned per calling thread (``mlflow models
serve`` predicts on a thread pool, and a predictor shared across threads crashes).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel


class _ThreadPredictors:
    """A ``paddle.inference`` predictor per thread, cloned from one that loaded the program."""

    def __init__(self, folder: Path):
        from paddle import inference

        config = inference.Config(str(folder / "inference.json"), str(folder / "inference.pdiparams"))
        config.disable_glog_info()
        self._template = inference.create_predictor(config)
        self._lock = threading.Lock()
        self._local = threading.local()

    def run(self, batch: np.ndarray) -> np.ndarray:
        predictor = getattr(self._local, "predictor", None)
        if predictor is None:
            with self._lock:
                predictor = self._template.clone()
            self._local.predictor = predictor
        handle = predictor.get_input_handle(predictor.get_input_names()[0])
        handle.reshape(list(batch.shape))
        handle.copy_from_cpu(batch)
        predictor.run()
        return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()


class TrafficFlowForecaster(PythonModel):
    def load_context(self, context):
        folder = Path(context.artifacts["program"])
        self.features = json.loads((folder / "features.json").read_text())["features"]
        self.predictors = _ThreadPredictors(folder)

    def predict(self, context, model_input, params=None) -> np.ndarray:
        frame = pd.DataFrame(model_input)
        missing = [c for c in self.features if c not in frame.columns]
        if missing:
            raise ValueError(f"missing feature column(s): {missing}")
        try:
            batch = np.ascontiguousarray(frame[self.features].to_numpy(dtype=np.float32))
        except (TypeError, ValueError):
            raise ValueError(f"feature columns must be numbers: {', '.join(self.features)}") from None
        if not len(batch):
            return np.zeros(0)
        if not np.isfinite(batch).all():
            raise ValueError("feature values must be finite numbers (no NaN or infinity)")
        return self.predictors.run(batch).reshape(-1).astype(np.float64)


mlflow.models.set_model(TrafficFlowForecaster())
