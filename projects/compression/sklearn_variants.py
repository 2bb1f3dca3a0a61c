"""Variants of scikit-learn pipelines: an ONNX Runtime graph (skl2onnx) and pruned tree ensembles.

``onnx``
    The whole pipeline (column transformer, word TF-IDF, one-hot, model) as one
    ONNX graph. What skl2onnx cannot convert exactly is refused with
    ``cannot convert: <reason>``: a ``char_wb``/``char`` analyzer, a custom
    tokenizer or preprocessor, a token pattern other than the default, or any
    converter error. The built graph must give the parent's labels on every
    row of the validation part, else it is refused too: never a silent wrong
    answer.
``pruned``
    Decision trees: refit the final tree with cost-complexity pruning
    (``ccp_alpha``); boosted or bagged ensembles: refit with fewer trees. The
    fitted feature steps are kept as they are. The amount is the largest cut
    whose validation macro-F1 stays within ``tolerance`` of the parent's (the
    validation part of the parent's own training split; the held-out set stays
    for the gate).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from projects.base import Dataset
from civicml.lazy import optional
from projects.compression.base import BuiltVariant, CannotCompress, Parent, log_onnx_pyfunc

DEFAULT_TOKEN_PATTERN = r"(?u)\b\w\w+\b"
# The same tokens as the default pattern (maximal runs of 2+ word characters), in RE2's syntax.
RE2_WORD_TOKENS = r"[\p{L}\p{M}\p{N}_]{2,}"


def pipeline_of(parent: Parent):
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(str(parent.path)).get_raw_model()


def _vectorizers(estimator):
    """Every fitted text vectorizer inside ``estimator`` (pipelines and column transformers), with its path."""
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.pipeline import FeatureUnion, Pipeline

    if isinstance(estimator, CountVectorizer):  # TfidfVectorizer derives from it
        yield "", estimator
    elif isinstance(estimator, Pipeline):
        for name, step in estimator.steps:
            for path, v in _vectorizers(step):
                yield f"{name}{'.' + path if path else ''}", v
    elif isinstance(estimator, ColumnTransformer):
        for name, step, _ in getattr(estimator, "transformers_", estimator.transformers):
            for path, v in _vectorizers(step):
                yield f"{name}{'.' + path if path else ''}", v
    elif isinstance(estimator, FeatureUnion):
        for name, step in estimator.transformer_list:
            for path, v in _vectorizers(step):
                yield f"{name}{'.' + path if path else ''}", v


def check_convertible(pipeline) -> dict[int, dict]:
    """Raise :class:`CannotCompress` for what skl2onnx would convert inexactly; return converter options."""
    options: dict[int, dict] = {}
    for path, vectorizer in _vectorizers(pipeline):
        where = f"the text vectorizer '{path or type(vectorizer).__name__}'"
        if vectorizer.analyzer != "word":
            raise CannotCompress(f"cannot convert: {where} uses analyzer={vectorizer.analyzer!r}; ONNX "
                                 f"converts only word tokens (retrain with char_ngrams=false for an ONNX variant)")
        if vectorizer.tokenizer is not None or vectorizer.preprocessor is not None:
            raise CannotCompress(f"cannot convert: {where} has a custom tokenizer or preprocessor")
        if vectorizer.token_pattern != DEFAULT_TOKEN_PATTERN or vectorizer.stop_words is not None \
                or vectorizer.strip_accents is not None:
            raise CannotCompress(f"cannot convert: {where} uses a token pattern, stop words or accent stripping "
                                 f"that has no exact ONNX equivalent")
        options[id(vectorizer)] = {"locale": "C", "tokenexp": RE2_WORD_TOKENS}
    return options


def _column_types(example: pd.DataFrame) -> list[tuple[str, Any, str]]:
    optional("skl2onnx", "compress")
    from skl2onnx.common.data_types import DoubleTensorType, Int64TensorType, StringTensorType

    out = []
    for column in example.columns:
        series = example[column]
        if pd.api.types.is_bool_dtype(series) or pd.api.types.is_integer_dtype(series):
            out.append((column, Int64TensorType([None, 1]), "int64"))
        elif pd.api.types.is_float_dtype(series):
            out.append((column, DoubleTensorType([None, 1]), "float64"))
        elif pd.api.types.is_string_dtype(series) or series.dtype == object:
            out.append((column, StringTensorType([None, 1]), "string"))
        else:
            raise CannotCompress(f"cannot convert: column '{column}' has dtype {series.dtype}")
    return out


def convert(pipeline, example: pd.DataFrame) -> tuple[bytes, dict]:
    """The pipeline as ONNX bytes plus the serving spec; :class:`CannotCompress` if it does not convert."""
    convert_sklearn = optional("skl2onnx", "compress").convert_sklearn

    options = check_convertible(pipeline)
    final = pipeline.steps[-1][1] if hasattr(pipeline, "steps") else pipeline
    if hasattr(final, "predict_proba") or hasattr(final, "classes_"):
        options[id(final)] = {"zipmap": False}
    columns = _column_types(example)
    try:
        graph = convert_sklearn(pipeline, initial_types=[(c, t) for c, t, _ in columns],
                                target_opset={"": 17, "ai.onnx.ml": 3}, options=options)
    except Exception as err:  # noqa: BLE001 - skl2onnx raises many types; each means "does not convert"
        first = " ".join(str(err).split(" with ")[0].split())[:200]  # skl2onnx appends pages of attributes
        raise CannotCompress(f"cannot convert: skl2onnx refused {type(final).__name__} "
                             f"({type(err).__name__}: {first})") from None
    spec = {"input": "columns", "columns": [{"name": c, "dtype": d} for c, _, d in columns], "output": "label"}
    return graph.SerializeToString(), spec


def _onnx_labels(onnx_bytes: bytes, spec: dict, frame: pd.DataFrame) -> np.ndarray:
    from projects.compression.ort_pyfunc import session

    feeds = {}
    for column in spec["columns"]:
        values = frame[column["name"]].to_numpy()
        values = values.astype(object) if column["dtype"] == "string" else values.astype(column["dtype"])
        feeds[column["name"]] = values.reshape(-1, 1)
    return session(onnx_bytes).run([spec["output"]], feeds)[0].reshape(-1)


def build_onnx(parent: Parent, settings: Mapping[str, Any]) -> BuiltVariant:
    pipeline = pipeline_of(parent)
    check_convertible(pipeline)
    if parent.valid is None:
        raise CannotCompress("cannot convert without rows to verify the graph on (pass data)")
    check = parent.valid.X
    onnx_bytes, spec = convert(pipeline, check.head(5))
    got = _onnx_labels(onnx_bytes, spec, check)
    want = np.asarray(pipeline.predict(check))
    wrong = int(np.sum(got.astype(str) != want.astype(str)))
    if wrong:
        raise CannotCompress(f"cannot convert: the ONNX graph gives other labels than the pipeline on {wrong} of "
                             f"{len(check)} validation rows")

    def log(name: str, metadata: Mapping[str, Any]) -> str:
        from mlflow.models import infer_signature

        example = check.head(3)
        return log_onnx_pyfunc(name, onnx_bytes, spec, signature=infer_signature(example, want[:3]),
                               input_example=example, metadata=metadata)

    import skl2onnx

    return BuiltVariant("onnx", "skl2onnx graph of the whole pipeline, served by ONNX Runtime",
                        {"converter": f"skl2onnx {skl2onnx.__version__}", "opset": 17,
                         "verified_rows": len(check)}, log, {"verify_mismatches": 0.0})


# -- pruned trees -------------------------------------------------------------------------------------
def _macro_f1(y, predicted) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(np.asarray(y).astype(str), np.asarray(predicted).astype(str), average="macro",
                          zero_division=0))


def _candidates(final, Xt, y) -> tuple[str, list[dict]]:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.tree import BaseDecisionTree

    if isinstance(final, BaseDecisionTree):
        alphas = final.cost_complexity_pruning_path(Xt, y).ccp_alphas
        alphas = np.unique(np.quantile(alphas[alphas > 0], np.linspace(0.05, 0.95, 12))) if np.any(alphas > 0) \
            else np.array([])
        return "ccp_alpha", [{"ccp_alpha": float(a)} for a in alphas]
    if isinstance(final, (HistGradientBoostingClassifier, HistGradientBoostingRegressor)):
        total = int(final.n_iter_)
        return "max_iter", [{"max_iter": k} for k in sorted({max(1, int(total * f)) for f in (0.2, 0.35, 0.5, 0.75)})
                            if k < total]
    if hasattr(final, "n_estimators") and hasattr(final, "estimators_"):
        total = int(final.n_estimators)
        return "n_estimators", [{"n_estimators": k} for k in sorted({max(1, int(total * f))
                                                                     for f in (0.2, 0.35, 0.5, 0.75)}) if k < total]
    raise CannotCompress(f"cannot prune: {type(final).__name__} is not a tree or tree ensemble")


def build_pruned(parent: Parent, settings: Mapping[str, Any]) -> BuiltVariant:
    from sklearn.base import clone
    from sklearn.pipeline import Pipeline

    train, valid = parent.require_data("pruned")
    tolerance = float(settings.get("tolerance", 0.01))
    pipeline = pipeline_of(parent)
    if not isinstance(pipeline, Pipeline):
        raise CannotCompress("cannot prune: the model is not a scikit-learn Pipeline")
    features, final = Pipeline(pipeline.steps[:-1]), pipeline.steps[-1][1]
    Xt, Xv = features.transform(train.X), features.transform(valid.X)
    knob, options = _candidates(final, Xt, train.y)
    base = _macro_f1(valid.y, final.predict(Xv))
    best, best_score, tried = None, None, []
    for option in options if knob != "ccp_alpha" else reversed(options):  # smallest model first
        model = clone(final).set_params(**option)
        if knob == "max_iter" and hasattr(model, "warm_start"):
            model.set_params(warm_start=False)
        model.fit(Xt, train.y)
        value = _macro_f1(valid.y, model.predict(Xv))
        tried.append((option[knob], value))
        if value >= base - tolerance:
            best, best_score = model, value
            break
    if best is None:
        raise CannotCompress(f"cannot prune: every {knob} tried loses more than {tolerance} validation macro-F1 "
                             f"(parent {base:.4f}; tried {', '.join(f'{k:.3g}: {v:.4f}' for k, v in tried)})")
    pruned = Pipeline(features.steps + [(pipeline.steps[-1][0], best)])
    chosen = best.get_params()[knob]

    def log(name: str, metadata: Mapping[str, Any]) -> str:
        from projects.service_requests.models import SklearnModel

        return SklearnModel(pruned).log_model(name, train.X.head(3), dict(metadata))

    return BuiltVariant("pruned", f"{type(final).__name__} refit with {knob}={chosen:.4g} (fitted features kept)",
                        {"knob": knob, knob: chosen, "tolerance": tolerance, "candidates": len(options)}, log,
                        {"valid_macro_f1_parent": base, "valid_macro_f1": best_score})
