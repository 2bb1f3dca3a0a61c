"""Serving code of a traffic_flow model (an MLflow *models-from-code* file).

MLflow copies this file into the logged model and runs it on
``mlflow.pyfunc.load_model``; it imports only NumPy, pandas, MLflow and Paddle,
never CivicML's training code, and unpickles nothing.

Artifacts: ``program/inference.json`` + ``inference.pdiparams`` (the exported
MLP with its input scaling built in) and ``program/features.json`` (the column
order). Input: a frame with the feature columns as float64 (the signature's
"double"; extra columns are ignored).
Output: a 1-D float64 array, the next hour's vehicle count per row.

Predictors come from ``paddle_predictor.PredictorPool`` (projects/paddle_predictor.py,
shipped with the model through ``code_paths``): a fixed pool made and warmed at load,
safe from any number of threads.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

try:  # shipped with the model through code_paths
    from paddle_predictor import PredictorPool
except ImportError:  # run from the source tree (when the model is logged)
    from projects.paddle_predictor import PredictorPool


class TrafficFlowForecaster(PythonModel):
    def load_context(self, context):
        folder = Path(context.artifacts["program"])
        self.features = json.loads((folder / "features.json").read_text())["features"]
        self.predictors = PredictorPool(folder)
        self.predictors.warm_up(np.zeros((1, len(self.features)), dtype=np.float32))

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
