"""Variants of the MiniLM text routers: ONNX Runtime fp32 and dynamic int8 encoders, a distilled student.

The measured working route (DEPENDENCY-NOTES): the fp32 Paddle program ->
paddle2onnx (opset 17; it matches Paddle to about 1e-7) -> ONNX Runtime
``quantize_dynamic`` with per-channel int8 weights (cosine to fp32 about 0.99).
Per-tensor weights and ``reduce_range`` degrade the embeddings, and Paddle's own
int8 paths fail, so neither is offered. The variant keeps the parent's tokenizer
and linear head; it is served by ``ort_pyfunc.py`` (no Paddle at serving time).

``distilled`` is a word + character TF-IDF logistic regression trained on the
router's answers over unlabelled request text (:func:`build_distilled`): a
scikit-learn pipeline, about a millisecond a row.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

from projects.compression.base import ORT_PYFUNC_FILE, BuiltVariant, CannotCompress, Parent, _requirements
from projects.compression.cnn import OPSET, export_onnx

PROGRAM = "minilm"


def router_dir(parent: Parent) -> Path:
    folder = parent.path / "artifacts" / "router"
    if not (folder / "encoder" / f"{PROGRAM}.pdiparams").exists():
        raise CannotCompress(f"cannot compress: {parent.path} holds no exported MiniLM router")
    return folder


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
            "max_chars": int(config.get("max_chars", 5000)), "batch_size": 32}
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
    int8 = quantize_dynamic_int8(fp32)
    return BuiltVariant("int8", "paddle2onnx fp32 encoder export, ORT dynamic int8 (per-channel int8 weights)",
                        {"quantization": "dynamic", "per_channel": True, "weights": "int8", "opset": OPSET},
                        _log(router, int8, parent),
                        {"onnx_fp32_bytes": float(len(fp32)), "onnx_int8_bytes": float(len(int8))})


def build_onnx(parent: Parent, settings: Mapping[str, Any]) -> BuiltVariant:
    router = router_dir(parent)
    fp32 = export_onnx(router / "encoder", PROGRAM)
    return BuiltVariant("onnx", "paddle2onnx fp32 encoder export served by ONNX Runtime", {"opset": OPSET},
                        _log(router, fp32, parent), {"onnx_fp32_bytes": float(len(fp32))})


# -- distilled ----------------------------------------------------------------------------------------
def build_distilled(parent: Parent, settings: Mapping[str, Any]) -> BuiltVariant:
    """A small fast student: word + character TF-IDF and logistic regression, trained on the MiniLM
    router's own answers over unlabelled request text (the training texts plus ``unlabelled`` freshly
    generated requests whose labels are never read), each weighted by the teacher's confidence."""
    import mlflow.pyfunc
    import numpy as np
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    train, _ = parent.require_data("distilled")
    extra = int(settings.get("unlabelled", 2000))
    texts = train.frame["description"].astype(str).tolist()
    if extra > 0:
        with tempfile.TemporaryDirectory() as tmp:
            fresh = parent.use_case.integrate(parent.use_case.generate_sources(
                Path(tmp), n=extra, seed=int(settings.get("seed", 77_777))))
        texts += fresh.frame["description"].astype(str).tolist()  # its labels are never read
    texts = [t for t in dict.fromkeys(texts) if t.strip()]
    teacher = mlflow.pyfunc.load_model(str(parent.path))
    answers = teacher.predict(pd.DataFrame({"description": texts}))
    labels = answers["label"].astype(str).to_numpy()
    confidence = answers[[c for c in answers.columns if c.startswith("p_")]].max(axis=1).to_numpy()
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
                        {"student": "tfidf_word_char_logreg", "texts": len(texts), "unlabelled_generated": extra,
                         "C": float(settings.get("C", 10.0))}, log, {"train_agreement_with_teacher": agreement})
