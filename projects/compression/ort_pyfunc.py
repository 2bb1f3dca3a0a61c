"""Serving code of an ONNX Runtime variant (an MLflow *models-from-code* file).

MLflow copies this file into every ONNX variant and runs it on
``mlflow.pyfunc.load_model``: it imports only NumPy, pandas, MLflow,
onnxruntime (and ``tokenizers`` for text), never CivicML, and unpickles nothing.

Artifacts: ``onnx/model.onnx`` and ``onnx/spec.json``. The spec says how a
request becomes the graph's inputs and what comes back:

``{"input": "columns", "columns": [{"name": "description", "dtype": "string"}, ...]}``
    a frame's columns, each fed as a ``[rows, 1]`` tensor (scikit-learn graphs);
    the answer is the graph's ``label`` output, as the parent pipeline answers.
``{"input": "text", "column": "description", "max_length": 128, "batch_size": 32, "max_chars": 5000}``
    a text column, tokenized with ``onnx/tokenizer.json`` (the ``tokenizers`` library), sorted by
    length and run in batches through a sentence encoder (``input_ids``, ``attention_mask`` ->
    one embedding per text); ``onnx/head.npz`` (weight, bias, labels, scale) turns embeddings
    into class probabilities; the answer is a frame with ``label`` and ``p_<class>`` columns.
``{"input": "tensor", "shape": [3, 32, 32], "labels": [...]}``
    one float32 array ``[batch, *shape]`` (or a frame whose single column holds one
    array per row); the graph gives class probabilities and the answer is a frame
    with ``label`` and ``p_<class>`` columns, as the parent CNN answers.

One ``InferenceSession`` serves every thread (ORT sessions are thread-safe); it
uses ``intra_op_threads`` threads (default: at most 2, the cores a small serving
host has) and one inter-op thread; idle threads do not spin unless ``"spin": true``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel


def session(model: str | Path | bytes, threads: int | None = None, spin: bool = False):
    """An ORT CPU session of a file or serialized graph; ``threads`` intra-op threads (default min(2, cores)).

    Idle intra-op threads sleep instead of spin-waiting (``spin=False``): on a small host shared with
    other processes, spinning threads took cores from everyone, this session included (a MiniLM int8
    batch of 32 under load average 14-17: 1.65 s spinning, 1.2-1.3 s not)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or min(2, os.cpu_count() or 1))
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), sess_options=options,
                                providers=["CPUExecutionProvider"])


class OnnxVariant(PythonModel):
    def load_context(self, context):
        folder = Path(context.artifacts["onnx"])
        self.spec = json.loads((folder / "spec.json").read_text())
        self.session = session(folder / "model.onnx", self.spec.get("intra_op_threads"), bool(self.spec.get("spin")))
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.input_name = self.session.get_inputs()[0].name
        if self.spec["input"] == "text":
            from tokenizers import Tokenizer

            self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
            self.tokenizer.enable_truncation(max_length=int(self.spec.get("max_length", 128)))
            self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
            with np.load(folder / "head.npz", allow_pickle=False) as head:
                self.head = {k: head[k] for k in ("weight", "bias", "scale")}
                self.spec["labels"] = [str(x) for x in head["labels"]]

    # -- scikit-learn graphs: one tensor per column ---------------------------------------------
    def feeds(self, frame) -> dict[str, np.ndarray]:
        """The graph's inputs for ``frame``: one tensor per column (what serving's ONNX runtime runs directly)."""
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

    # -- text graphs: a sentence encoder and a linear head -----------------------------------------
    def _texts(self, model_input) -> list[str]:
        column = self.spec.get("column", "description")
        if isinstance(model_input, pd.DataFrame):
            if column not in model_input.columns:
                raise ValueError(f"input needs a '{column}' column, got {list(model_input.columns)}")
            model_input = model_input[column]
        texts = list(model_input)
        limit = int(self.spec.get("max_chars", 5000))
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"'{column}' row {i}: expected a non-empty string")
            if len(text) > limit:
                raise ValueError(f"'{column}' row {i}: {len(text)} characters, at most {limit} accepted")
        return texts

    def embed(self, texts: list[str]) -> np.ndarray:
        """One embedding per text; texts are batched by length so that padding stays short."""
        order = np.argsort([len(t) for t in texts], kind="stable")
        size = int(self.spec.get("batch_size", 32))
        out = None
        for start in range(0, len(texts), size):
            chunk = order[start:start + size]
            encodings = self.tokenizer.encode_batch([texts[i] for i in chunk])
            ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
            mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
            vectors = self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
            if out is None:
                out = np.empty((len(texts), vectors.shape[1]), np.float32)
            out[chunk] = vectors
        return out if out is not None else np.zeros((0, 0), np.float32)

    def _text_probabilities(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, len(self.spec["labels"])), np.float32)
        logits = float(self.head["scale"]) * (self.embed(texts) @ self.head["weight"].T) + self.head["bias"]
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, context, model_input, params=None):
        if self.spec["input"] == "columns":
            label = self.spec.get("output", "label")
            return self.session.run([label], self.feeds(model_input))[0].reshape(-1)
        labels = np.asarray(self.spec["labels"], dtype=object)
        if self.spec["input"] == "text":
            probs = self._text_probabilities(self._texts(model_input))
        else:
            batch = self._batch(model_input)
            probs = self.session.run(None, {self.input_name: batch})[0] if len(batch) else \
                np.zeros((0, len(labels)), np.float32)
        frame = pd.DataFrame(probs.astype(np.float64), columns=[f"p_{c}" for c in labels])
        frame.insert(0, "label", labels[probs.argmax(axis=1)] if len(probs) else [])
        return frame


if not __package__:  # loaded as a file by MLflow's models-from-code; imported, it does nothing
    mlflow.models.set_model(OnnxVariant())
