"""The ``cnn`` family of street_scenes: a small Paddle CNN trained in dynamic-graph mode.

Architecture (``width`` w, about 280k parameters at w=32)::

    conv3x3(3->w)-BN-ReLU, maxpool            32x32 -> 16x16
    conv3x3(w->2w)-BN-ReLU, conv3x3(2w->2w)-BN-ReLU, maxpool   -> 8x8
    conv3x3(2w->4w)-BN-ReLU, conv3x3(4w->4w)-BN-ReLU, maxpool  -> 4x4
    global average pool, dropout, linear(4w -> classes)

Training: AdamW with cosine learning-rate decay, cross-entropy, augmentation by
horizontal flips and random 32x32 crops of a 3-pixel reflect-padded image plus
a small brightness jitter; validation macro-F1 is reported every epoch (a tuner
may prune), training stops after ``patience`` epochs without improvement and
keeps the best epoch's weights.

The logged model is the inference program (``paddle.jit.save``, softmax
included, input ``float32 [batch, 3, 32, 32]``) plus ``labels.json``, served by
``pyfunc.py`` next to this file.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Mapping

import mlflow
import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import pandas as pd
from sklearn.metrics import f1_score

from projects.base import Dataset, FittedModel, ModelFamily, Reporter
from projects.paddle_common import (export_program, fit_epochs, fit_seed, log_program_pyfunc, minibatches,
                                    parameter_bytes, parameter_count, seed_everything)
from projects.space import Categorical, Float, Int
from projects.street_scenes.generator import SIZE

PYFUNC_FILE = Path(__file__).with_name("pyfunc.py")


def _conv(cin: int, cout: int) -> list[nn.Layer]:
    return [nn.Conv2D(cin, cout, 3, padding=1, bias_attr=False), nn.BatchNorm2D(cout), nn.ReLU()]


class SceneNet(nn.Layer):
    """Logits of ``classes`` scene classes for a batch of ``[N, 3, 32, 32]`` images."""

    def __init__(self, classes: int, width: int = 32, dropout: float = 0.2):
        super().__init__()
        w = int(width)
        self.features = nn.Sequential(
            *_conv(3, w), nn.MaxPool2D(2),
            *_conv(w, 2 * w), *_conv(2 * w, 2 * w), nn.MaxPool2D(2),
            *_conv(2 * w, 4 * w), *_conv(4 * w, 4 * w), nn.MaxPool2D(2),
            nn.AdaptiveAvgPool2D(1), nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Dropout(float(dropout)), nn.Linear(4 * w, int(classes)))

    def forward(self, image):
        return self.head(self.features(image))


class _Probabilities(nn.Layer):
    """What is exported: class probabilities (softmax over the logits)."""

    def __init__(self, net: SceneNet):
        super().__init__()
        self.net = net

    def forward(self, image):
        return F.softmax(self.net(image), axis=-1)


def augment(batch: np.ndarray, rng: np.random.Generator, pad: int = 3) -> np.ndarray:
    """Random horizontal flip, random crop of the reflect-padded image, brightness x U(0.85, 1.15)."""
    n, _, h, w = batch.shape
    flip = rng.random(n) < 0.5
    out = np.where(flip[:, None, None, None], batch[..., ::-1], batch)
    padded = np.pad(out, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="reflect")
    dy, dx = rng.integers(0, 2 * pad + 1, n), rng.integers(0, 2 * pad + 1, n)
    out = np.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    out = out * rng.uniform(0.85, 1.15, (n, 1, 1, 1)).astype(np.float32)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def images_of(X: pd.DataFrame | np.ndarray) -> np.ndarray:
    """The ``image`` column of a frame (or an array) as one float32 ``[N, 3, H, W]`` array."""
    if isinstance(X, pd.DataFrame):
        X = np.stack(X["image"].to_numpy()) if len(X) else np.zeros((0, 3, SIZE, SIZE), np.float32)
    return np.ascontiguousarray(X, dtype=np.float32)


def _probabilities(net: SceneNet, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    net.eval()
    parts = []
    with paddle.no_grad():
        for start in range(0, len(images), batch_size):
            logits = net(paddle.to_tensor(images[start:start + batch_size]))
            parts.append(F.softmax(logits, axis=-1).numpy())
    return np.concatenate(parts) if parts else np.zeros((0, net.head[-1].weight.shape[1]), np.float32)


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


class SceneClassifier(FittedModel):
    def __init__(self, net: SceneNet, labels: list[str], info: Mapping[str, Any]):
        self.net = net
        self.labels = list(labels)
        self.info = dict(info)

    def predict_proba(self, X) -> np.ndarray:
        return _probabilities(self.net, images_of(X))

    def predict(self, X) -> np.ndarray:
        probs = self.predict_proba(X)
        return np.asarray(self.labels, dtype=object)[probs.argmax(axis=1)]

    def size_bytes(self) -> int:
        return parameter_bytes(self.net)

    def log_model(self, name: str, input_example: pd.DataFrame, metadata: dict) -> str:
        from mlflow.models import ModelSignature
        from mlflow.types import ColSpec, Schema, TensorSpec

        signature = ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3, SIZE, SIZE))]),
            outputs=Schema([ColSpec("string", "label")] + [ColSpec("double", f"p_{c}") for c in self.labels]),
        )
        with tempfile.TemporaryDirectory() as tmp:
            program = export_program(_Probabilities(self.net), Path(tmp) / "program", [None, 3, SIZE, SIZE], "image")
            (program / "labels.json").write_text(json.dumps({"labels": self.labels, "input_shape": [3, SIZE, SIZE]}))
            return log_program_pyfunc(name, PYFUNC_FILE, program, signature=signature,
                                      input_example=images_of(input_example),
                                      metadata={**metadata, **self.info,
                                                "input": f"float32 [batch, 3, {SIZE}, {SIZE}], RGB in [0, 1]"})


class CnnFamily(ModelFamily):
    name = "cnn"
    space = {
        "learning_rate": Float(3e-4, 1e-2, log=True),
        "width": Categorical([16, 24, 32, 48]),
        "dropout": Float(0.0, 0.5),
        "weight_decay": Float(1e-6, 1e-3, log=True),
        "batch_size": Categorical([32, 64, 128]),
        "augment": Categorical([True, False]),
        "epochs": Int(4, 16),
    }
    defaults = {"epochs": 8, "batch_size": 32, "learning_rate": 3e-3, "width": 32, "dropout": 0.2,
                "weight_decay": 1e-4, "patience": 3, "augment": True}

    def fit(self, train: Dataset, valid: Dataset, params: Mapping[str, Any], reporter: Reporter) -> SceneClassifier:
        p = {**self.defaults, **params}
        epochs, batch_size, patience = int(p["epochs"]), int(p["batch_size"]), int(p["patience"])
        labels = sorted(set(train.y.astype(str)) | set(valid.y.astype(str)))
        index = {label: k for k, label in enumerate(labels)}
        x_train, y_train = images_of(train.X), train.y.astype(str).map(index).to_numpy(np.int64)
        x_valid, y_valid = images_of(valid.X), valid.y.astype(str).map(index).to_numpy(np.int64)

        seed = fit_seed(p, train)
        rng = seed_everything(seed)
        net = SceneNet(len(labels), int(p["width"]), float(p["dropout"]))
        steps = max(1, -(-len(x_train) // batch_size))
        schedule = paddle.optimizer.lr.CosineAnnealingDecay(float(p["learning_rate"]), T_max=max(1, epochs * steps))
        optimizer = paddle.optimizer.AdamW(learning_rate=schedule, parameters=net.parameters(),
                                           weight_decay=float(p["weight_decay"]))
        use_augment = _flag(p["augment"])

        def run_epoch(epoch: int) -> float:
            losses = []
            for idx in minibatches(len(x_train), batch_size, rng):
                batch = augment(x_train[idx], rng) if use_augment else x_train[idx]
                loss = F.cross_entropy(net(paddle.to_tensor(batch)), paddle.to_tensor(y_train[idx]))
                loss.backward()
                optimizer.step()
                optimizer.clear_grad()
                schedule.step()
                losses.append(float(loss))
            return float(np.mean(losses))

        def evaluate() -> float:
            predicted = _probabilities(net, x_valid).argmax(axis=1)
            return float(f1_score(y_valid, predicted, labels=list(range(len(labels))), average="macro",
                                  zero_division=0))

        loop = fit_epochs(net, run_epoch, evaluate, reporter, epochs=epochs, patience=patience,
                          direction="maximize")
        info = {"parameters": parameter_count(net), "best_epoch": loop.best_epoch, "epochs_run": loop.epochs_run,
                "fit_seed": seed}
        if mlflow.active_run() is not None:
            for epoch, loss in enumerate(loop.train_loss, start=1):
                mlflow.log_metric("train_loss", loss, step=epoch)
            mlflow.log_metrics({"best_epoch": loop.best_epoch, "epochs_run": loop.epochs_run,
                                "parameters": parameter_count(net)})
        return SceneClassifier(net, labels, info)


FAMILIES = {"cnn": CnnFamily()}
