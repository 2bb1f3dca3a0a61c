"""Serving code of a street_scenes model (an MLflow *models-from-code* file).

MLflow copies this file into the logged model and runs it on
``mlflow.pyfunc.load_model``; it imports only NumPy, pandas, MLflow and Paddle,
never CivicML's training code, and unpickles nothing.

Artifacts: ``program/inference.json`` + ``inference.pdiparams`` (the exported
CNN, softmax included) and ``program/labels.json``. Input: float32
``[batch, 3, 32, 32]`` RGB in [0, 1] (an array, or a frame whose single column
holds one CHW array per row). Output: a frame with ``label`` and one ``p_<class>``
column per class.

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


class StreetSceneClassifier(PythonModel):
    def load_context(self, context):
        folder = Path(context.artifacts["program"])
        spec = json.loads((folder / "labels.json").read_text())
        self.labels = np.asarray(spec["labels"], dtype=object)
        self.input_shape = tuple(spec["input_shape"])
        self.predictors = _ThreadPredictors(folder)

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
