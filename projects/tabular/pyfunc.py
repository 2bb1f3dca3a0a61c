"""Serving code of a tabular ``paddle_mlp`` model (an MLflow *models-from-code* file).

MLflow copies this file into the logged model and runs it on
``mlflow.pyfunc.load_model``; it imports NumPy, pandas, MLflow, skops and Paddle
(and, through the preprocessing it loads, scikit-learn and
``civicml.tabular_transforms``), never CivicML's training code, and unpickles
nothing.

Artifacts (``program/``): ``inference.json`` + ``inference.pdiparams`` (the
exported MLP: softmax included for a classifier, the output in the target's own
units for a regressor), ``preprocess.skops`` (the fitted preprocessing; loaded
only if every type it holds is scikit-learn's, NumPy's, SciPy's, a builtin or one
of CivicML's two column transformers) and ``model.json`` (task, feature columns,
class labels, the network's input width).

Input: a frame with the raw feature columns (numbers, categories, dates as text,
free text; extra columns are ignored). Output: a classifier answers a frame with
``label`` and one ``p_<class>`` column per class; a regressor a 1-D float64 array.

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

TRUSTED = ("sklearn.", "numpy.", "scipy.", "builtins.", "collections.", "civicml.tabular_transforms.")


class TabularPaddleModel(PythonModel):
    def load_context(self, context):
        import skops.io

        folder = Path(context.artifacts["program"])
        spec = json.loads((folder / "model.json").read_text())
        self.features, self.task = spec["features"], spec["task"]
        self.labels = np.asarray(spec["labels"], dtype=object)
        path = folder / "preprocess.skops"
        types = skops.io.get_untrusted_types(file=path)
        unsafe = [t for t in types if not t.startswith(TRUSTED)]
        if unsafe:
            raise ValueError(f"the preprocessing holds types that are not trusted: {unsafe}")
        self.preprocess = skops.io.load(path, trusted=types)
        self.predictors = PredictorPool(folder)
        self.predictors.warm_up(np.zeros((1, int(spec["width"])), dtype=np.float32))

    def predict(self, context, model_input, params=None):
        frame = pd.DataFrame(model_input)
        missing = [c for c in self.features if c not in frame.columns]
        if missing:
            raise ValueError(f"missing feature column(s): {missing}")
        if len(frame):
            batch = np.ascontiguousarray(self.preprocess.transform(frame[self.features]), dtype=np.float32)
            out = self.predictors.run(batch)
        else:
            out = np.zeros((0, max(1, len(self.labels))), dtype=np.float32)
        if self.task != "classification":
            return out.reshape(-1).astype(np.float64)
        answer = pd.DataFrame(out.astype(np.float64), columns=[f"p_{c}" for c in self.labels])
        answer.insert(0, "label", self.labels[out.argmax(axis=1)] if len(out) else [])
        return answer


mlflow.models.set_model(TabularPaddleModel())
