"""Variants of the MiniLM text routers: ONNX Runtime fp32 and dynamic int8 encoders, a distilled student.

The measured working route (DEPENDENCY-NOTES): the fp32 Paddle program ->
paddle2onnx (opset 17; it matches Paddle to about 1e-7) -> ONNX Runtime
``quantize_dynamic`` with per-channel int8 weights (cosine to fp32 about 0.99).
Per-tensor weights and ``reduce_range`` degrade the embeddings, and Paddle's own
int8 paths fail, so neither is offered. Static QDQ int8 was measured too: S8S8 no faster than
fp32 (cosine 0.77), U8S8 as fast as dynamic but worse (cosine 0.91). The graph is quantized
unfused and served with ONNX Runtime's ``SkipLayerNormFusion`` off: its fused kernel cost a
fifth of an int8 batch here, LayerNormalization + Add a twentieth (``bench/bench_minilm_paths.py``). The variant keeps the parent's tokenizer
and linear head; it is served by ``ort_pyfunc.py`` (no Paddle at serving time).

``distilled`` (:func:`build_distilled`) is a static-embedding student in the
manner of Model2Vec: each token of the teacher's vocabulary is run through the
teacher's encoder once; a request is the SIF-weighted mean of its tokens' vectors
and a linear head, fitted on the router's soft labels over unlabelled request
text, routes it. NumPy and ``tokenizers`` only (``static_pyfunc.py``), well under
a millisecond a row. ``student=tfidf`` builds the earlier word + character TF-IDF
logistic regression instead.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

from civicml.answers import confidence_of, read_probabilities
from projects.compression.base import ORT_PYFUNC_FILE, BuiltVariant, CannotCompress, Parent, _requirements
from projects.compression.cnn import OPSET, export_onnx

PROGRAM = "minilm"
# ORT's fused SkipLayerNormalization CPU kernel: 45-59 ms of a 200 ms int8 batch (32 x 24 tokens, one thread);
# the LayerNormalization + Add it replaces: 5 + 9 ms. Its BiasGelu likewise lost to Gelu (19 vs 10 ms).
DISABLED_OPTIMIZERS = ("SkipLayerNormFusion", "BiasGeluFusion")


def router_dir(parent: Parent) -> Path:
    folder = parent.path / "artifacts" / "router"
    if not (folder / "encoder" / f"{PROGRAM}.pdiparams").exists():
        raise CannotCompress(f"cannot compress: {parent.path} holds no exported MiniLM router")
    return folder


def fuse_transformer(fp32: bytes, heads: int = 12, hidden: int = 384) -> bytes:
    """ONNX Runtime's transformer fusions (skip+layer norm, bias+GELU) applied before quantization, with
    ``opt_level=0`` (the higher levels import torch); the graph unchanged if the optimizer fails."""
    from onnxruntime.transformers import optimizer

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "fused.onnx"
        src.write_bytes(fp32)
        try:
            optimizer.optimize_model(str(src), model_type="bert", num_heads=heads, hidden_size=hidden,
                                     opt_level=0).save_model_to_file(str(dst))
        except Exception:  # noqa: BLE001 - an unfused graph is still a correct graph
            return fp32
        return dst.read_bytes()


def quantize_dynamic_int8(fp32: bytes) -> bytes:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(fp32)
        quantize_dynamic(str(src), str(dst), per_channel=True, weight_type=QuantType.QInt8)
        return dst.read_bytes()


def _log(router: Path, graph: bytes, parent: Parent):
    from mlflow.models import Model

    config = json.loads((router / "router.json").read_text())
    spec = {"input": "text", "column": "description", "max_length": int(config.get("max_length", 128)),
            "max_chars": int(config.get("max_chars", 5000)), "batch_size": 32,
            "disabled_optimizers": list(DISABLED_OPTIMIZERS)}
    signature = Model.load(str(parent.path / "MLmodel")).signature

    def log(name: str, metadata: Mapping[str, Any]) -> str:
        import mlflow
        import pandas as pd

        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "onnx"
            folder.mkdir()
            (folder / "model.onnx").write_bytes(graph)
            (folder / "spec.json").write_text(json.dumps(spec))
            shutil.copyfile(router / "tokenizer.json", folder / "tokenizer.json")
            shutil.copyfile(router / "head.npz", folder / "head.npz")
            example = pd.DataFrame({"description": ["Pothole on Main Street", "Missed garbage pickup"]})
            info = mlflow.pyfunc.log_model(name=name, python_model=str(ORT_PYFUNC_FILE),
                                           artifacts={"onnx": str(folder)}, signature=signature,
                                           input_example=example, metadata=dict(metadata),
                                           pip_requirements=_requirements("onnxruntime", "tokenizers"))
        return info.model_uri

    return log


def build_int8(parent: Parent, settings: Mapping[str, Any]) -> BuiltVariant:
    router = router_dir(parent)
    fp32 = export_onnx(router / "encoder", PROGRAM)
    fuse = str(settings.get("fuse", False)).lower() not in ("0", "false", "no")
    int8 = quantize_dynamic_int8(fuse_transformer(fp32) if fuse else fp32)
    return BuiltVariant("int8", "paddle2onnx fp32 encoder export, "
                                + ("ORT transformer fusions (skip layer norm, bias GELU), " if fuse else "")
                                + "ORT dynamic int8 (per-channel int8 weights)",
                        {"quantization": "dynamic", "per_channel": True, "weights": "int8", "opset": OPSET,
                         "fused": fuse},
                        _log(router, int8, parent),
                        {"onnx_fp32_bytes": float(len(fp32)), "onnx_int8_bytes": float(len(int8))})


def build_onnx(parent: Parent, settings: Mapping[str, Any]) -> BuiltVariant:
    router = router_dir(parent)
    fp32 = export_onnx(router / "encoder", PROGRAM)
    return BuiltVariant("onnx", "paddle2onnx fp32 encoder export served by ONNX Runtime", {"opset": OPSET},
                        _log(router, fp32, parent), {"onnx_fp32_bytes": float(len(fp32))})


def build_bf16(parent: Parent, settings: Mapping[str, Any]) -> BuiltVariant:
    """The parent's own Paddle router pinned to oneDNN bfloat16 (``router.json`` precision ``bf16``); only
    offered where the CPU computes bf16 natively (``projects.compression.build`` checks /proc/cpuinfo)."""
    router = router_dir(parent)

    def log(name: str, metadata: Mapping[str, Any]) -> str:
        import mlflow
        from mlflow.models import Model

        from projects.text_encoder import runtime

        model = Model.load(str(parent.path / "MLmodel"))
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "router"
            shutil.copytree(router, folder)
            config = json.loads((folder / "router.json").read_text())
            (folder / "router.json").write_text(json.dumps({**config, "precision": "bf16"}, indent=2))
            info = mlflow.pyfunc.log_model(name=name, python_model=runtime.__file__, artifacts={"router": str(folder)},
                                           signature=model.signature, metadata=dict(metadata),
                                           pip_requirements=_requirements("paddlepaddle", "tokenizers"))
        return info.model_uri

    return BuiltVariant("bf16", "the parent's Paddle encoder run by oneDNN in bfloat16 (AMX / AVX-512 BF16)",
                        {"precision": "bf16", "runtime": "paddle.inference oneDNN"}, log)


# -- distilled ----------------------------------------------------------------------------------------
STATIC_PYFUNC_FILE = Path(__file__).with_name("static_pyfunc.py")


def _distillation_texts(parent: Parent, settings: Mapping[str, Any]) -> list[str]:
    """The training texts plus ``unlabelled`` freshly generated requests (seen phrasings; their labels are
    never read), de-duplicated."""
    train, _ = parent.require_data("distilled")
    extra = int(settings.get("unlabelled", 2000))
    texts = train.frame["description"].dropna().astype(str).tolist()
    if extra > 0:
        with tempfile.TemporaryDirectory() as tmp:
            fresh = parent.use_case.integrate(parent.use_case.generate_sources(
                Path(tmp), n=extra, seed=int(settings.get("seed", 77_777))))
        texts += fresh.frame["description"].dropna().astype(str).tolist()
    return [t for t in dict.fromkeys(texts) if t.strip()]


def token_vectors(encoder: bytes, ids, cls: int, sep: int, batch: int = 1024):
    """The teacher's sentence embedding of each token alone (``[CLS] token [SEP]``), one row per id."""
    import numpy as np

    from projects.compression.ort_pyfunc import session

    graph = session(encoder)
    ids = np.asarray(ids, dtype=np.int64)
    out = None
    for start in range(0, len(ids), batch):
        part = ids[start:start + batch]
        feed = np.stack([np.full(len(part), cls), part, np.full(len(part), sep)], axis=1)
        vectors = graph.run(None, {"input_ids": feed, "attention_mask": np.ones_like(feed)})[0]
        if out is None:
            out = np.zeros((len(ids), vectors.shape[1]), np.float32)
        out[start:start + len(part)] = vectors
    return out


def fit_soft_head(X, P, l2: float, max_iter: int = 500):
    """Multinomial logistic regression on soft targets ``P`` (the teacher's probabilities), L2 ``l2``:
    minimises ``-mean(sum(P * log softmax(X W + b))) + l2 * |W|^2`` with L-BFGS."""
    import numpy as np
    from scipy.optimize import minimize

    X, P = np.asarray(X, np.float64), np.asarray(P, np.float64)
    d, k = X.shape[1], P.shape[1]

    def objective(w):
        W, b = w[:d * k].reshape(d, k), w[d * k:]
        Z = X @ W + b
        Z -= Z.max(axis=1, keepdims=True)
        log_p = Z - np.log(np.exp(Z).sum(axis=1, keepdims=True))
        G = (np.exp(log_p) - P) / len(X)
        loss = -(P * log_p).sum() / len(X) + l2 * (W ** 2).sum()
        return loss, np.concatenate([(X.T @ G + 2 * l2 * W).ravel(), G.sum(axis=0)])

    result = minimize(objective, np.zeros(d * k + k), jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    return result.x[:d * k].reshape(d, k), result.x[d * k:]


def build_distilled(parent: Parent, settings: Mapping[str, Any]) -> BuiltVariant:
    """A small fast student trained on the router's own answers over unlabelled request text.

    ``student=static`` (default), Model2Vec-style: every token of the teacher's vocabulary is run through
    the teacher's encoder once, alone, to give it a static vector (``vocabulary=full``; ``corpus``: only
    the tokens of the distillation texts, for quick builds); a text is the SIF-weighted mean of its tokens'
    vectors (weight ``a / (a + frequency)``, frequencies counted on the distillation texts, so rare and
    unseen words count most), standardised; a linear head is fitted on the teacher's probabilities (soft
    labels). ``student=tfidf``: the earlier word + char TF-IDF logistic regression."""
    import mlflow.pyfunc
    import pandas as pd

    texts = _distillation_texts(parent, settings)
    teacher = mlflow.pyfunc.load_model(str(parent.path))
    answers = teacher.predict(pd.DataFrame({"description": texts}))
    student = str(settings.get("student", "static"))
    if student == "tfidf":
        return _build_tfidf_student(parent, settings, texts, answers)
    if student != "static":
        raise CannotCompress(f"cannot distil: unknown student '{student}' (known: static, tfidf)")
    return _build_static_student(parent, settings, texts, answers)


def _build_static_student(parent: Parent, settings: Mapping[str, Any], texts: list[str], answers) -> BuiltVariant:
    from collections import Counter

    import numpy as np
    from tokenizers import Tokenizer

    from projects.compression.static_pyfunc import StaticRouter

    router = router_dir(parent)
    labels, P = read_probabilities(answers)
    tokenizer = Tokenizer.from_file(str(router / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    vocab = tokenizer.get_vocab()
    size = max(vocab.values()) + 1
    counts = Counter(i for e in tokenizer.encode_batch(texts, add_special_tokens=False) for i in e.ids)
    vocabulary = str(settings.get("vocabulary", "full"))
    if vocabulary not in ("full", "corpus"):
        raise CannotCompress(f"cannot distil: 'vocabulary' must be full or corpus, got {vocabulary!r}")
    special = {vocab[t] for t in ("[CLS]", "[SEP]", "[PAD]", "[MASK]") if t in vocab}
    ids = sorted(counts) if vocabulary == "corpus" else \
        [i for t, i in vocab.items() if i not in special and not t.startswith("[unused")]
    fp32 = export_onnx(router / "encoder", PROGRAM)
    table = token_vectors(fp32, ids, vocab["[CLS]"], vocab["[SEP]"])
    vectors = np.zeros((size, table.shape[1]), np.float32)
    vectors[ids] = table
    a = float(settings.get("sif", 1e-2))
    total = max(1, sum(counts.values()))
    weights = np.zeros(size, np.float32)
    weights[ids] = a / (a + np.asarray([counts.get(i, 0) for i in ids], np.float64) / total)
    vectors = vectors.astype(np.float16)  # what is shipped; the head is fitted on these values
    l2 = float(settings.get("l2", 1e-3))
    raw = StaticRouter(tokenizer, vectors, weights, np.zeros((table.shape[1], len(labels))), np.zeros(len(labels)),
                       labels).features(texts)
    mu, sd = raw.mean(axis=0), raw.std(axis=0) + 1e-6
    W, b = fit_soft_head((raw - mu) / sd, P, l2)
    W_folded = (W / sd[:, None]).astype(np.float32)  # standardisation folded into the head
    b_folded = (b - (mu / sd) @ W).astype(np.float32)
    fitted = StaticRouter(tokenizer, vectors, weights, W_folded, b_folded, labels)
    agreement = float(np.mean(fitted.probabilities(texts).argmax(axis=1) == P.argmax(axis=1)))
    config = json.loads((router / "router.json").read_text())
    spec = {"column": "description", "max_chars": int(config.get("max_chars", 5000))}

    def log(name: str, metadata: Mapping[str, Any]) -> str:
        import mlflow
        import pandas as pd
        from mlflow.models import Model

        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "student"
            folder.mkdir()
            shutil.copyfile(router / "tokenizer.json", folder / "tokenizer.json")
            np.savez(folder / "student.npz", vectors=vectors, weights=weights, W=W_folded, b=b_folded,
                     labels=np.asarray(labels))
            (folder / "spec.json").write_text(json.dumps(spec))
            example = pd.DataFrame({"description": ["Pothole on Main Street", "Missed garbage pickup"]})
            info = mlflow.pyfunc.log_model(name=name, python_model=str(STATIC_PYFUNC_FILE),
                                           artifacts={"student": str(folder)},
                                           signature=Model.load(str(parent.path / "MLmodel")).signature,
                                           input_example=example, metadata=dict(metadata),
                                           pip_requirements=_requirements("tokenizers"))
        return info.model_uri

    return BuiltVariant("distilled", f"static-embedding student (Model2Vec-style): {len(ids)} teacher token vectors, "
                                     f"SIF-weighted mean (a={a:g}), linear head on the router's soft labels over "
                                     f"{len(texts)} unlabelled request texts",
                        {"student": "static_embeddings", "vocabulary": vocabulary, "tokens": len(ids),
                         "dims": int(table.shape[1]), "sif_a": a, "l2": l2, "texts": len(texts),
                         "unlabelled_generated": int(settings.get("unlabelled", 2000))}, log,
                        {"train_agreement_with_teacher": agreement})


def _build_tfidf_student(parent: Parent, settings: Mapping[str, Any], texts: list[str], answers) -> BuiltVariant:
    """A small fast student: word + character TF-IDF and logistic regression, trained on the MiniLM
    router's own answers over unlabelled request text (the training texts plus ``unlabelled`` freshly
    generated requests whose labels are never read), each weighted by the teacher's confidence."""
    import numpy as np
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    labels = answers["label"].astype(str).to_numpy()
    confidence = confidence_of(read_probabilities(answers)[1])[0]
    features = ColumnTransformer([
        ("words", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1), "description"),
        ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2,
                                  max_features=50_000), "description")])
    student = Pipeline([("features", features),
                        ("model", LogisticRegression(C=float(settings.get("C", 10.0)), max_iter=2000))])
    frame = pd.DataFrame({"description": texts})
    student.fit(frame, labels, model__sample_weight=np.asarray(confidence, dtype=float))
    agreement = float(np.mean(student.predict(frame) == labels))

    def log(name: str, metadata: Mapping[str, Any]) -> str:
        from projects.service_requests.models import SklearnModel

        return SklearnModel(student).log_model(name, frame.head(3), dict(metadata))

    return BuiltVariant("distilled", f"word+char TF-IDF logistic regression trained on the router's answers over "
                                     f"{len(texts)} unlabelled request texts (weighted by teacher confidence)",
                        {"student": "tfidf_word_char_logreg", "texts": len(texts),
                         "unlabelled_generated": int(settings.get("unlabelled", 2000)),
                         "C": float(settings.get("C", 10.0))}, log, {"train_agreement_with_teacher": agreement})
