"""Serving code of a distilled static-embedding text router (an MLflow *models-from-code* file).

MLflow copies this file into the variant and runs it on ``mlflow.pyfunc.load_model``:
it imports only NumPy, pandas, MLflow and ``tokenizers``, never CivicML, and
unpickles nothing.

Artifacts (``student/``): ``tokenizer.json`` (the teacher's WordPiece tokenizer),
``student.npz`` and ``spec.json`` (``{"column": "description", "max_chars": 5000}``).
``student.npz`` holds ``vectors`` ``[vocabulary, d]`` (one static vector per token,
float16), ``weights`` ``[vocabulary]`` (how much a token counts in the mean), the
linear head ``W`` ``[d, classes]`` and ``b``, and ``labels``. A text is the weighted
mean of its tokens' vectors, L2-normalised; ``softmax(x @ W + b)`` gives the class
probabilities. The answer is a frame with ``label`` and ``p_<class>`` columns, as the
teacher router answers.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel


class StaticRouter:
    """The numeric part, usable without MLflow (the builder scores with it before logging)."""

    def __init__(self, tokenizer, vectors: np.ndarray, weights: np.ndarray, W: np.ndarray, b: np.ndarray,
                 labels, max_length: int = 256):
        self.tokenizer = tokenizer
        self.vectors = np.asarray(vectors, dtype=np.float32)  # float16 on disk, float32 to compute
        self.weights = np.asarray(weights, dtype=np.float32)
        self.W, self.b = np.asarray(W, dtype=np.float32), np.asarray(b, dtype=np.float32)
        self.labels = [str(x) for x in labels]
        self.max_length = int(max_length)

    def features(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.vectors.shape[1]), np.float32)
        for row, encoding in enumerate(self.tokenizer.encode_batch(list(texts), add_special_tokens=False)):
            ids = encoding.ids[:self.max_length]
            if ids:
                w = self.weights[ids]
                total = float(w.sum())
                if total > 0:
                    out[row] = (w @ self.vectors[ids]) / total
        norm = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norm, 1e-9)

    def probabilities(self, texts: list[str]) -> np.ndarray:
        logits = self.features(texts) @ self.W + self.b
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def frame(self, texts: list[str]) -> pd.DataFrame:
        probs = self.probabilities(texts) if texts else np.zeros((0, len(self.labels)), np.float32)
        labels = np.asarray(self.labels, dtype=object)
        frame = pd.DataFrame(probs.astype(np.float64), columns=[f"p_{c}" for c in self.labels])
        frame.insert(0, "label", labels[probs.argmax(axis=1)] if len(probs) else [])
        return frame

    @classmethod
    def load(cls, folder) -> "StaticRouter":
        from tokenizers import Tokenizer

        folder = Path(folder)
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tokenizer.no_padding()
        tokenizer.no_truncation()
        with np.load(folder / "student.npz", allow_pickle=False) as data:
            return cls(tokenizer, data["vectors"], data["weights"], data["W"], data["b"],
                       [str(x) for x in data["labels"]])


class StaticStudent(PythonModel):
    def load_context(self, context):
        folder = Path(context.artifacts["student"])
        self.spec = json.loads((folder / "spec.json").read_text())
        self.router = StaticRouter.load(folder)

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

    def predict(self, context, model_input, params=None):
        return self.router.frame(self._texts(model_input))


if not __package__:  # loaded as a file by MLflow's models-from-code; imported, it does nothing
    mlflow.models.set_model(StaticStudent())
