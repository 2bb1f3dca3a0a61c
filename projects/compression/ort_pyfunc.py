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
uses ``intra_op_threads`` threads (default: the host's physical cores, read from
/proc/cpuinfo at load) and one inter-op thread; idle threads do not spin unless
``"spin": true``. ``"disabled_optimizers"`` names ONNX Runtime graph fusions the
session must not apply (text encoders: ``SkipLayerNormFusion``, whose CPU kernel
was measured 4-9x slower than the LayerNormalization + Add it replaces).

At load the variant says which compute path it takes on this CPU (``cpu_path``: engine,
precision, the instruction set ONNX Runtime's int8 kernels use, threads); serving shows it
in ``/health``. ONNX Runtime picks its kernels itself from the CPU at session creation
(AVX-512 VNNI ``vpdpbusd`` where the CPU has it); this only names the choice.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel


_INT8_OPS = (b"MatMulInteger", b"DynamicQuantize", b"QLinear", b"QuantizeLinear", b"ConvInteger")


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
    """The CPU's flags that this process can use (as projects.text_encoder.runtime reads them: this file is
    logged with a variant and loads where CivicML is not importable, so it keeps its own copy)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return flags if not flags & AMX_FLAGS or amx_permitted() else flags - AMX_FLAGS
    except OSError:
        pass
    return set()


def physical_cores() -> int:
    """Distinct (package, core) pairs in /proc/cpuinfo: hyper-threads share a core's vector units."""
    cores, package = set(), "0"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "physical id":
                package = value.strip()
            elif key.strip() == "core id":
                cores.add((package, value.strip()))
    except OSError:
        pass
    return max(1, min(len(cores) or (os.cpu_count() or 1), os.cpu_count() or 1))


def int8_isa(flags: set[str]) -> str:
    """The instructions ONNX Runtime's (MLAS) u8s8 int8 GEMM runs on with these CPU flags."""
    if "amx_int8" in flags:
        return "amx_int8"
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    if "avx_vnni" in flags:
        return "avx_vnni"
    if {"avx512bw", "avx512f"} <= flags:
        return "avx512bw (no VNNI: vpmaddubsw)"
    return "avx2 (no VNNI: vpmaddubsw)" if "avx2" in flags else "sse (no VNNI)"


def describe_path(graph: bytes, threads: int, flags: set[str] | None = None) -> dict:
    """What this graph runs as on this CPU: precision (int8 when it holds quantized operators), kernels, threads."""
    flags = cpu_flags() if flags is None else flags
    int8 = any(op in graph for op in _INT8_OPS)
    kernels = f"MLAS int8 on {int8_isa(flags)}" if int8 else \
        ("MLAS fp32 on avx512f" if "avx512f" in flags else "MLAS fp32 on avx2" if "avx2" in flags else "MLAS fp32")
    return {"engine": "onnxruntime", "precision": "int8" if int8 else "fp32", "kernels": kernels,
            "intra_op_threads": int(threads)}


def session(model: str | Path | bytes, threads: int | None = None, spin: bool = False,
            disabled_optimizers: list[str] | None = None):
    """An ORT CPU session of a file or serialized graph; ``threads`` intra-op threads (default: physical cores).

    Idle intra-op threads sleep instead of spin-waiting (``spin=False``): on a small host shared with
    other processes, spinning threads took cores from everyone, this session included (a MiniLM int8
    batch of 32 under load average 14-17: 1.65 s spinning, 1.2-1.3 s not)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or physical_cores())
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), sess_options=options,
                                providers=["CPUExecutionProvider"], disabled_optimizers=disabled_optimizers or None)


class OnnxVariant(PythonModel):
    def load_context(self, context):
        folder = Path(context.artifacts["onnx"])
        self.spec = json.loads((folder / "spec.json").read_text())
        graph = (folder / "model.onnx").read_bytes()
        threads = int(self.spec.get("intra_op_threads") or physical_cores())
        self.session = session(graph, threads, bool(self.spec.get("spin")), self.spec.get("disabled_optimizers"))
        self.cpu_path = describe_path(graph, threads)
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
