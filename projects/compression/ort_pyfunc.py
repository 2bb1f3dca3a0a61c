"""Serving code of an ONNX Runtime variant (an MLflow *models-from-code* file).

MLflow copies this file into every ONNX variant and runs it on
``mlflow.pyfunc.load_model``: it imports only NumPy, pandas, MLflow and
onnxruntime, never CivicML, and unpickles nothing.

Artifacts: ``onnx/model.onnx`` and ``onnx/spec.json``. The spec says how a
request becomes the graph's inputs and what comes back:

``{"input": "columns", "columns": [{"name": "description", "dtype": "string"}, ...]}``
    a frame's columns, each fed as a ``[rows, 1]`` tensor (scikit-learn graphs);
    the answer is the graph's ``label`` output, as the parent pipeline answers.
``{"input": "tensor", "shape": [3, 32, 32], "labels": [...]}``
    one float32 array ``[batch, *shape]`` (or a frame whose single column holds one
    array per row); the graph gives class probabilities and the answer is a frame
    with ``label`` and ``p_<class>`` columns, as the parent CNN answers.

One ``InferenceSession`` serves every thread (ORT sessions are thread-safe); it
uses ``intra_op_threads`` threads (default: at most 2, the cores a small serving
host has) and one inter-op thread.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel


def session(model: str | Path | bytes, threads: int | None = None):
    """An ORT CPU session of a file or serialized graph; ``threads`` intra-op threads (default min(2, cores))."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or min(2, os.cpu_count() or 1))
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), sess_options=options, providers=["CPUExecutionProvider"])


class OnnxVariant(PythonModel):
    def load_context(self, context):
        folder = Path(context.artifacts["onnx"])
        self.spec = json.loads((folder / "spec.json").read_text())
        self.session = session(folder / "model.onnx", self.spec.get("intra_op_threads"))
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.input_name = self.session.get_inputs()[0].name

    # -- scikit-learn graphs: one tensor per column ---------------------------------------------
    def _columns(self, frame) -> dict[str, np.ndarray]:
        if not isinstance(frame, pd.DataFrame):
            frame = pd.DataFrame(frame)
        feeds = {}
        for column in self.spec["columns"]:
            name, dtype = column["name"], column["dtype"]
            if name not in frame.columns:
                raise ValueError(f"missing input column '{name}'")
            values = frame[name].to_numpy()
            if dtype == "string":
                values = np.asarray([v if isinstance(v, str) else ("" if v is None else str(v)) for v in values],
                                    dtype=object)
            else:
                values = values.astype(np.dtype(dtype))
            feeds[name] = values.reshape(-1, 1)
        return feeds

    # -- image graphs: one float32 batch ------------------------------------------------------
    def _batch(self, model_input) -> np.ndarray:
        shape = tuple(self.spec["shape"])
        if isinstance(model_input, pd.DataFrame):
            column = model_input.iloc[:, 0]
            model_input = np.stack([np.asarray(v, dtype=np.float32) for v in column]) if len(column) else \
                np.zeros((0, *shape), np.float32)
        batch = np.asarray(model_input, dtype=np.float32)
        if batch.ndim == len(shape):
            batch = batch[None]
        if batch.shape[1:] != shape:
            raise ValueError(f"expected an input of shape [batch, {', '.join(map(str, shape))}], "
                             f"got {list(batch.shape)}")
        return np.ascontiguousarray(batch)

    def predict(self, context, model_input, params=None):
        if self.spec["input"] == "columns":
            label = self.spec.get("output", "label")
            return self.session.run([label], self._columns(model_input))[0].reshape(-1)
        batch = self._batch(model_input)
        labels = np.asarray(self.spec["labels"], dtype=object)
        if len(batch):
            probs = self.session.run(None, {self.input_name: batch})[0]
        else:
            probs = np.zeros((0, len(labels)), np.float32)
        frame = pd.DataFrame(probs.astype(np.float64), columns=[f"p_{c}" for c in labels])
        frame.insert(0, "label", labels[probs.argmax(axis=1)] if len(probs) else [])
        return frame


if not __package__:  # loaded as a file by MLflow's models-from-code; imported, it does nothing
    mlflow.models.set_model(OnnxVariant())
