"""The ``paddle_mlp`` family of tabular use cases: CivicML's preprocessing, then a PaddlePaddle MLP.

The preprocessing is the one every tabular family uses (``families.preprocessor``,
dense: imputed and scaled numbers, one-hot categories, date parts, TF-IDF text),
fitted on the training rows. The network is ``layers`` x [linear(hidden), GELU,
dropout] and a linear output:

* classification: one logit per class, trained with cross-entropy; the exported
  program ends in a softmax, and the served model answers ``label`` and one
  ``p_<class>`` per class;
* regression: the target standardized with the training rows' mean and standard
  deviation, trained with the L1 loss when the metric is an absolute or
  percentage error and with the squared error otherwise; the exported program's
  last layer is rescaled so that it outputs the target itself.

AdamW, a cosine learning-rate decay; the use case's metric on the validation
rows is reported every epoch (a tuner may prune), and training stops after
``patience`` epochs without improvement, keeping the best epoch.

The logged model is a *models-from-code* pyfunc (``projects/tabular/pyfunc.py``)
with two artifacts: the fitted preprocessing in the skops format (checked for
types outside scikit-learn, NumPy, SciPy and CivicML's two column transformers
both when logged and when loaded) and the exported Paddle program. It takes the
raw columns, as the scikit-learn families' models do.

Paddle is imported when a model is fitted or loaded, not when the family is
named: listing a use case's families stays cheap.
"""

from __future__ import annotations

import json
import pickle
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from projects.base import Dataset, FittedModel, Reporter
from projects.tabular.families import TabularFamily, preprocessor

PYFUNC_FILE = Path(__file__).with_name("pyfunc.py")
L1_METRICS = ("mae", "mape", "neg_mean_absolute_error", "neg_mean_absolute_percentage_error",
              "neg_median_absolute_error")


def _network(width: int, outputs: int, hidden: int, layers: int, dropout: float):
    import paddle.nn as nn

    blocks = []
    for _ in range(int(layers)):
        blocks += [nn.Linear(width, int(hidden)), nn.GELU(), nn.Dropout(float(dropout))]
        width = int(hidden)
    blocks.append(nn.Linear(width, outputs))
    return nn.Sequential(*blocks)


def _matrix(pre, X: pd.DataFrame) -> np.ndarray:
    return np.ascontiguousarray(pre.transform(X), dtype=np.float32)


class PaddleTabularModel(FittedModel):
    """The fitted preprocessing and network; ``labels`` for a classifier, ``target_scale`` for a regressor."""

    def __init__(self, preprocess, net, architecture: Mapping[str, Any], features: list[str],
                 labels: list | None = None, target_scale: tuple[float, float] = (0.0, 1.0),
                 info: Mapping[str, Any] | None = None):
        self.preprocess = preprocess
        self.net = net
        self.architecture = dict(architecture)
        self.features = list(features)
        self.labels = None if labels is None else list(labels)
        self.target_scale = target_scale
        self.info = dict(info or {})

    def _outputs(self, x: np.ndarray) -> np.ndarray:
        """The network's raw outputs (logits, or the standardized target) for a preprocessed matrix."""
        import paddle

        self.net.eval()
        with paddle.no_grad():
            parts = [self.net(paddle.to_tensor(x[s:s + 4096])).numpy() for s in range(0, len(x), 4096)]
        return np.concatenate(parts) if parts else np.zeros((0, self.architecture["outputs"]), np.float32)

    def _answer(self, outputs: np.ndarray) -> np.ndarray:
        if self.labels is not None:
            return np.asarray(self.labels, dtype=object)[outputs.argmax(axis=1)]
        mean, std = self.target_scale
        return outputs.reshape(-1).astype(np.float64) * std + mean

    def predict_proba(self, X: pd.DataFrame):
        if self.labels is None:
            return None
        logits = self._outputs(_matrix(self.preprocess, X[self.features])).astype(np.float64)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self._answer(self._outputs(_matrix(self.preprocess, X[self.features])))

    def size_bytes(self) -> int:
        from projects.paddle_common import parameter_bytes

        return parameter_bytes(self.net) + len(pickle.dumps(self.preprocess))

    def _exported_layer(self):
        """The network as served: softmax appended (classifier), or the last layer rescaled to the target."""
        import paddle
        import paddle.nn as nn

        a = self.architecture
        net = _network(a["width"], a["outputs"], a["hidden"], a["layers"], a["dropout"])
        state = {k: v.numpy().copy() for k, v in self.net.state_dict().items()}
        if self.labels is None:
            mean, std = self.target_scale
            last = len(net) - 1
            state[f"{last}.weight"] = state[f"{last}.weight"] * np.float32(std)
            state[f"{last}.bias"] = state[f"{last}.bias"] * np.float32(std) + np.float32(mean)
        net.set_state_dict({k: paddle.to_tensor(v) for k, v in state.items()})
        layer = nn.Sequential(net, nn.Softmax(axis=-1)) if self.labels is not None else net
        layer.eval()
        return layer

    def log_model(self, name: str, input_example: pd.DataFrame, metadata: dict) -> str:
        import skops.io
        from mlflow.models import infer_signature

        from civicml.tabular_transforms import TRUSTED_PREFIX
        from projects.paddle_common import export_program, log_program_pyfunc
        from projects.sklearn_model import SAFE_PREFIXES, sklearn_requirements, skops_trusted_types

        skops_trusted_types(self.preprocess, SAFE_PREFIXES + (TRUSTED_PREFIX,))  # refuses anything else
        example = input_example[self.features]
        with tempfile.TemporaryDirectory() as tmp:
            program = export_program(self._exported_layer(), Path(tmp) / "program",
                                     [None, self.architecture["width"]], "input")
            skops.io.dump(self.preprocess, program / "preprocess.skops")
            (program / "model.json").write_text(json.dumps({
                "task": "classification" if self.labels is not None else "regression",
                "features": self.features, "labels": [c.item() if isinstance(c, np.generic) else c
                                                       for c in self.labels or []],
                "width": self.architecture["width"]}))
            if self.labels is not None:
                proba = self.predict_proba(example)
                output = pd.DataFrame(proba, columns=[f"p_{c}" for c in self.labels])
                output.insert(0, "label", self.predict(example).astype(str))
            else:
                output = self.predict(example)
            return log_program_pyfunc(name, PYFUNC_FILE, program, signature=infer_signature(example, output),
                                      input_example=example, metadata={**metadata, **self.info},
                                      requirements=sklearn_requirements("paddlepaddle"))


def fit_mlp(family: TabularFamily, train: Dataset, valid: Dataset, params: Mapping[str, Any],
            reporter: Reporter) -> PaddleTabularModel:
    """Fit ``family`` (``families.PaddleMLP``: its task, column types and metric) on ``train``."""
    import paddle
    import paddle.nn.functional as F

    from projects.metrics import compute, direction
    from projects.paddle_common import fit_epochs, fit_seed, minibatches, parameter_count, seed_everything

    p = {**family.defaults, **params}
    epochs, batch_size, patience = int(p["epochs"]), int(p["batch_size"]), int(p["patience"])
    pre = preprocessor(family.types, train.features, int(p.get("text_features", family.text_features)), True)
    x_train = np.ascontiguousarray(pre.fit_transform(train.X, train.y), dtype=np.float32)
    x_valid = _matrix(pre, valid.X)
    labels, scale = None, (0.0, 1.0)
    if family.classification:
        labels = sorted(train.y.unique())
        index = {c: i for i, c in enumerate(labels)}
        y_train = train.y.map(index).to_numpy(np.int64)
        outputs = len(labels)
    else:
        values = train.y.to_numpy(np.float64)
        scale = (float(values.mean()), float(max(values.std(), 1e-9)))
        y_train = ((values - scale[0]) / scale[1]).astype(np.float32)
        outputs = 1
    seed = fit_seed(p, train)
    rng = seed_everything(seed)
    architecture = {"width": int(x_train.shape[1]), "outputs": outputs, "hidden": int(p["hidden"]),
                    "layers": int(p["layers"]), "dropout": float(p["dropout"])}
    net = _network(**architecture)
    steps = max(1, -(-len(x_train) // batch_size))
    schedule = paddle.optimizer.lr.CosineAnnealingDecay(float(p["learning_rate"]), T_max=max(1, epochs * steps))
    optimizer = paddle.optimizer.AdamW(learning_rate=schedule, parameters=net.parameters(),
                                       weight_decay=float(p["weight_decay"]))
    l1 = family.metric in L1_METRICS
    model = PaddleTabularModel(pre, net, architecture, list(train.features), labels, scale)

    def run_epoch(epoch: int) -> float:
        losses = []
        for idx in minibatches(len(x_train), batch_size, rng):
            out = net(paddle.to_tensor(x_train[idx]))
            target = paddle.to_tensor(y_train[idx])
            if labels is not None:
                loss = F.cross_entropy(out, target)
            else:
                out = out.squeeze(-1)
                loss = F.l1_loss(out, target) if l1 else F.mse_loss(out, target)
            loss.backward()
            optimizer.step()
            optimizer.clear_grad()
            schedule.step()
            losses.append(float(loss))
        return float(np.mean(losses))

    def evaluate() -> float:
        return compute(family.metric, valid.y, model._answer(model._outputs(x_valid)))

    loop = fit_epochs(net, run_epoch, evaluate, reporter, epochs=epochs, patience=patience,
                      direction=direction(family.metric))
    model.info = {"parameters": parameter_count(net), "best_epoch": loop.best_epoch,
                  "epochs_run": loop.epochs_run, "fit_seed": seed}
    return model


__all__ = ["PaddleTabularModel", "fit_mlp"]
