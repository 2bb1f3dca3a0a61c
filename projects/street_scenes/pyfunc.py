"""Serving code of a street_scenes model (an MLflow *models-from-code* file).

MLflow copies this file into the logged model and runs it on
``mlflow.pyfunc.load_model``; it imports only NumPy, pandas, MLflow and Paddle,
never CivicML's training code, and unpickles nothing.

Artifacts: ``program/inference.json`` + ``inference.pdiparams`` (the exported
CNN, softmax included) and ``program/labels.json``. Input: float32
``[batch, 3, 32, 32]`` RGB in [0, 1] (an array, or a frame whose single column
holds one CHW array per row). Output: a frame with ``label`` and one ``p_<class>``
column per class.

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


class StreetSceneClassifier(PythonModel):
    def load_context(self, context):
        folder = Path(context.artifacts["program"])
        spec = json.loads((folder / "labels.json").read_text())
        self.labels = np.asarray(spec["labels"], dtype=object)
        self.input_shape = tuple(spec["input_shape"])
        self.predictors = PredictorPool(folder)
        self.predictors.warm_up(np.zeros((1, *self.input_shape), dtype=np.float32))

    def _batch(self, model_input) -> np.ndarray:
        if isinstance(model_input, pd.DataFrame):
            column = model_input["image"] if "image" in model_input else model_input.iloc[:, 0]
            model_input = np.stack([np.asarray(v, dtype=np.float32) for v in column]) if len(column) else []
        batch = np.asarray(model_input, dtype=np.float32)
        if batch.ndim == len(self.input_shape):  # one image without a batch dimension
            batch = batch[None]
        if batch.shape[1:] != self.input_shape:
            raise ValueError(f"expected images of shape [batch, {', '.join(map(str, self.input_shape))}], "
                             f"got {list(batch.shape)}")
        return np.ascontiguousarray(batch)

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        batch = self._batch(model_input)
        probs = self.predictors.run(batch) if len(batch) else np.zeros((0, len(self.labels)), np.float32)
        frame = pd.DataFrame(probs.astype(np.float64), columns=[f"p_{c}" for c in self.labels])
        frame.insert(0, "label", self.labels[probs.argmax(axis=1)] if len(probs) else [])
        return frame


mlflow.models.set_model(StreetSceneClassifier())
