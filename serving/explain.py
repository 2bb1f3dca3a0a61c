"""Why a served model gave each answer: signed contributions and one plain sentence per row.

The method follows the model (:func:`explainer_for` picks it from the loaded model):

* ``linear`` -- a scikit-learn pipeline ending in a linear model (``coef_``): exact
  contributions ``x_j * coef_kj`` of the predicted class ``k``; with the intercept
  they sum to the decision function.
* ``tree`` -- a pipeline ending in a tree model: SHAP's ``TreeExplainer`` (exact
  path-dependent SHAP values); with the base value they sum to the model's output.
* ``occlusion`` -- a model that reads one text column (the MiniLM router): each
  word is removed in turn; its weight is the predicted class's score with the word
  minus the score without it (so removing a positive word lowers the score).
* ``fallback`` -- anything else with named columns: each column is replaced by
  the values of a background sample (the model's logged input example, else the
  request's other rows) and its weight is the average drop of the predicted
  class's score (or of the predicted value). It is model-agnostic and approximate.

Contributions are then named as people read them: TF-IDF columns become the
words and phrases of the text (character n-grams are shared out among the words
that contain them, which keeps their sum), one-hot columns become ``district =
Midtown``, and the components of a ``TruncatedSVD`` are shared out among the
features they project (``x_j * V_kj / z_k``, which also keeps the sum).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from civicml.errors import InvalidInput

TOP = 6
_EDGE_PUNCT = re.compile(r"^\W+|\W+$")


@dataclass
class Explanation:
    """One row's answer and why."""

    prediction: Any
    contributions: list[tuple[str, float]]  # strongest first, signed toward the prediction
    sentence: str
    method: str
    base: float | None = None  # intercept (linear) or expected value (tree); None for occlusion methods
    score: float | None = None  # what the contributions explain: decision value, probability, or prediction
    model: dict | None = field(default=None)  # the served version: name, version, alias, runtime

    def to_dict(self, top: int = TOP) -> dict:
        out = asdict(self)
        out["contributions"] = [{"feature": f, "weight": round(float(w), 6)}
                                for f, w in self.contributions[:top]]
        out["prediction"] = _plain(self.prediction)
        return out


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


# -- naming: from a featurizer's columns back to words and categories ---------------------------
def _text_tokens(vectorizer, text: str) -> list[str]:
    pre = vectorizer.build_preprocessor()(text)
    return pre.split()


def _word_key(token: str) -> str:
    return _EDGE_PUNCT.sub("", token) or token


class _Namer:
    """Turns a vector of contributions over a featurizer's output into {readable name: weight}."""

    def __init__(self, featurizer):
        self.featurizer = featurizer
        self.parts = []  # (slice, kind, transformer, input column(s))
        from sklearn.compose import ColumnTransformer

        if isinstance(featurizer, ColumnTransformer):
            for name, trans, cols in featurizer.transformers_:
                if name == "remainder" or trans == "drop":
                    continue
                sl = featurizer.output_indices_[name]
                self.parts.append((sl, self._kind(trans), trans, cols))
        elif featurizer is not None:
            n = len(featurizer.get_feature_names_out())
            self.parts.append((slice(0, n), self._kind(featurizer), featurizer, None))

    @staticmethod
    def _kind(trans) -> str:
        from sklearn.feature_extraction.text import CountVectorizer
        from sklearn.preprocessing import OneHotEncoder

        if isinstance(trans, CountVectorizer):  # TfidfVectorizer is one
            return "chars" if str(trans.analyzer).startswith("char") else "words"
        if isinstance(trans, OneHotEncoder):
            return "onehot"
        return "plain"

    def name(self, weights: np.ndarray, row: pd.Series | None, feature_names: list[str],
             values: np.ndarray | None = None) -> dict[str, float]:
        """``values`` (the featurized row) tells present from absent: a tree may use a word's absence."""
        out: dict[str, float] = {}
        absent = (lambda i: values is not None and i < len(values) and values[i] == 0)

        def add(key, w):
            out[key] = out.get(key, 0.0) + float(w)

        covered = np.zeros(len(weights), dtype=bool)
        for sl, kind, trans, cols in self.parts:
            idx = np.arange(len(weights))[sl]
            covered[idx] = True
            nz = [i for i in idx if weights[i] != 0.0]
            if not nz:
                continue
            if kind in ("words", "chars"):
                vocab = trans.get_feature_names_out()
                column = cols if isinstance(cols, str) else (cols[0] if cols is not None and len(cols) else None)
                text = str(row[column]) if row is not None and column is not None else ""
                tokens = [_word_key(t) for t in _text_tokens(trans, text)]
                for i in nz:
                    gram = vocab[i - sl.start]
                    if absent(i):
                        add(f"no '{gram.strip()}'" + (" (characters)" if kind == "chars" else ""), weights[i])
                        continue
                    if kind == "words":
                        add(f"'{gram}'", weights[i])
                        continue
                    owners = sorted({t for t in tokens if gram.strip() in f" {t} " or gram in f" {t} "})
                    if not owners:  # a gram of a token that punctuation split differently: keep it whole
                        add(f"'{gram.strip()}' (characters)", weights[i])
                    for t in owners:
                        add(f"'{t}'", weights[i] / len(owners))
            elif kind == "onehot":
                for i in nz:
                    j = i - sl.start
                    for c, cats in zip(trans.feature_names_in_, trans.categories_):
                        if j < len(cats):
                            add(f"{c} {'is not' if absent(i) else '='} {cats[j]}", weights[i])
                            break
                        j -= len(cats)
            else:
                names = trans.get_feature_names_out()
                for i in nz:
                    add(str(names[i - sl.start]), weights[i])
        for i in np.flatnonzero(~covered & (weights != 0)):
            add(feature_names[i] if i < len(feature_names) else f"feature {i}", weights[i])
        return out


def _rank(named: dict[str, float]) -> list[tuple[str, float]]:
    return sorted(named.items(), key=lambda kv: -abs(kv[1]))


# -- the sentence -------------------------------------------------------------------------------
def sentence(prediction, contributions: list[tuple[str, float]], task: str = "classification") -> str:
    """One plain sentence: what was predicted, the two strongest reasons for it, and one against."""
    pros = [f for f, w in contributions if w > 0][:2]
    cons = [f for f, w in contributions if w < 0][:1]
    answer = f"Predicted {prediction:.4g}" if task == "regression" and isinstance(prediction, (int, float)) \
        else f"Answered '{prediction}'"
    if not pros and not cons:
        return f"{answer}; no single input stood out."
    text = answer
    if pros:
        text += f", mostly because of {' and '.join(pros)}"
    if cons:
        text += f"{';' if pros else ','} {cons[0]} pulled the other way"
    return text + "."


# -- explainers ---------------------------------------------------------------------------------
class Explainer:
    method = "none"
    task = "classification"

    def explain(self, frame: pd.DataFrame) -> list[Explanation]:
        raise NotImplementedError


def _split_pipeline(model):
    """(featurizer, projection, estimator) of a scikit-learn pipeline, or of a bare estimator."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.pipeline import Pipeline

    if not isinstance(model, Pipeline):
        return None, None, model
    steps = [s for _, s in model.steps if s not in (None, "passthrough")]
    estimator, transforms = steps[-1], steps[:-1]
    projection = None
    if transforms and isinstance(transforms[-1], TruncatedSVD):
        projection, transforms = transforms[-1], transforms[:-1]
    if not transforms:
        return None, projection, estimator
    featurizer = transforms[0] if len(transforms) == 1 else Pipeline([(f"s{i}", t) for i, t in enumerate(transforms)])
    return featurizer, projection, estimator


class _PipelineExplainer(Explainer):
    def __init__(self, model):
        self.model = model
        self.featurizer, self.projection, self.estimator = _split_pipeline(model)
        self.namer = _Namer(self.featurizer)
        self.classes = getattr(self.estimator, "classes_", None)
        self.task = "classification" if self.classes is not None else "regression"

    def _features(self, frame):
        X = self.featurizer.transform(frame) if self.featurizer is not None else frame
        names = list(self.featurizer.get_feature_names_out()) if self.featurizer is not None \
            else [str(c) for c in getattr(frame, "columns", range(np.shape(X)[1]))]
        return X, names

    def _back_project(self, phi: np.ndarray, X_row: np.ndarray) -> np.ndarray:
        """Share out each component's contribution among the features it projects (keeps the sum)."""
        if self.projection is None:
            return phi
        parts = X_row[None, :] * self.projection.components_  # (k, features): x_j * V_kj
        z = parts.sum(axis=1)
        live = np.abs(z) > 1e-12
        shared = ((np.where(live, phi, 0.0) / np.where(live, z, 1.0))[:, None] * parts).sum(axis=0)
        # a component whose inputs are all zero still moved the output: keep its share, unnamed
        return np.append(shared, np.where(live, 0.0, phi).sum())

    def _explained(self, frame, X, names, i: int, prediction, phi: np.ndarray, base: float) -> Explanation:
        """Row ``i``'s explanation from its contributions ``phi`` over the model's features and ``base``."""
        x = self._row_dense(X, i)
        weights = self._back_project(phi, x)
        ranked = _rank(self.namer.name(weights, frame.iloc[i] if hasattr(frame, "iloc") else None, names, x))
        return Explanation(prediction, ranked, sentence(prediction, ranked, self.task), self.method,
                           base=base, score=float(phi.sum() + base))

    def _row_dense(self, X, i) -> np.ndarray:
        row = X[i]
        return np.asarray(row.todense()).ravel() if hasattr(row, "todense") else np.asarray(row, dtype=float).ravel()


class LinearExplainer(_PipelineExplainer):
    """Exact: contribution_j = x_j * coef_kj for the predicted class k; sum + intercept = decision function."""

    method = "linear"

    def explain(self, frame):
        X, names = self._features(frame)
        Z = self.projection.transform(X) if self.projection is not None else X
        predictions = self.estimator.predict(Z)
        coef = np.atleast_2d(self.estimator.coef_)
        intercept = np.atleast_1d(getattr(self.estimator, "intercept_", 0.0))
        out = []
        for i in range(Z.shape[0]):
            z = self._row_dense(Z, i)
            if self.classes is not None and coef.shape[0] == len(self.classes):
                k, sign = int(np.searchsorted(self.classes, predictions[i])), 1.0
            else:  # binary (one row of coefficients, toward classes_[1]) or regression
                k = 0
                sign = 1.0 if self.classes is None or predictions[i] == self.classes[-1] else -1.0
            phi = sign * z * coef[k]
            base = sign * float(intercept[k] if len(intercept) > k else intercept[0])
            out.append(self._explained(frame, X, names, i, predictions[i], phi, base))
        return out


class TreeExplainer(_PipelineExplainer):
    """SHAP TreeExplainer on the tree model's own inputs; values + base value = the model's output."""

    method = "tree"

    def __init__(self, model):
        super().__init__(model)
        import shap

        self._shap = shap.TreeExplainer(self.estimator)

    def explain(self, frame):
        X, names = self._features(frame)
        Z = self.projection.transform(X) if self.projection is not None else X
        Zd = np.asarray(Z.todense()) if hasattr(Z, "todense") else np.asarray(Z, dtype=float)
        predictions = self.estimator.predict(Zd)
        values = np.asarray(self._shap.shap_values(Zd, check_additivity=False))
        expected = np.atleast_1d(self._shap.expected_value)
        if values.ndim == 2:  # one output (regression, or a binary margin toward classes_[1])
            values = values[:, :, None]
        out = []
        for i in range(Zd.shape[0]):
            sign = 1.0
            if self.classes is not None and values.shape[2] == len(self.classes):
                k = int(np.searchsorted(self.classes, predictions[i]))
            else:
                k = 0
                if self.classes is not None and predictions[i] != self.classes[-1]:
                    sign = -1.0
            phi = sign * values[i, :, k]
            base = sign * float(expected[k] if len(expected) > k else expected[0])
            out.append(self._explained(frame, X, names, i, predictions[i], phi, base))
        return out


def _scores(predict, frame: pd.DataFrame, labels=None) -> tuple[np.ndarray, np.ndarray, str]:
    """(predictions, one score per row per class or value, task) from a pyfunc-style ``predict``."""
    out = predict(frame)
    if isinstance(out, pd.DataFrame):
        probs = [c for c in out.columns if str(c).startswith("p_")]
        if "label" in out.columns and probs:
            return out["label"].to_numpy(dtype=object), out[probs].to_numpy(float), "classification"
        out = out.iloc[:, 0]
    values = np.asarray(out).ravel()
    if values.dtype.kind in "fiu":
        return values, values.astype(float)[:, None], "regression"
    return values, None, "classification"


def _class_score(predictions, scores, labels, i, label) -> float:
    if scores is None:
        return float(predictions[i] == label)
    if scores.shape[1] == 1:
        return float(scores[i, 0])
    return float(scores[i, labels.index(label)]) if labels else float(scores[i].max())


class OcclusionExplainer(Explainer):
    """Word occlusion for a model that reads one text column: weight = score(with) - score(without)."""

    method = "occlusion"

    def __init__(self, predict, text_column: str, labels: list[str] | None = None):
        self.predict, self.column, self.labels = predict, text_column, labels

    def explain(self, frame):
        predictions, scores, self.task = _scores(self.predict, frame)
        labels = self.labels or ([str(c)[2:] for c in self.predict(frame.head(1)).columns if str(c).startswith("p_")]
                                 if scores is not None and scores.shape[1] > 1 else None)
        out = []
        for i in range(len(frame)):
            text = str(frame.iloc[i][self.column])
            words = text.split()
            variants = []
            for j in range(len(words)):
                variant = frame.iloc[[i]].copy()
                variant[self.column] = " ".join(words[:j] + words[j + 1:]) or "."
                variants.append(variant)
            full = _class_score(predictions, scores, labels, i, predictions[i])
            named: dict[str, float] = {}
            if variants:
                _, vscores, _ = _scores(self.predict, pd.concat(variants, ignore_index=True))
                vpred = np.full(len(variants), predictions[i], dtype=object)
                for j, w in enumerate(words):
                    key = f"'{_word_key(w)}'"
                    drop = full - _class_score(vpred, vscores, labels, j, predictions[i])
                    named[key] = named.get(key, 0.0) + drop
            ranked = _rank(named)
            out.append(Explanation(predictions[i], ranked, sentence(predictions[i], ranked, self.task), self.method,
                                   score=full))
        return out


class FallbackExplainer(Explainer):
    """Model-agnostic: replace one column at a time by a background sample's values; weight = mean score drop."""

    method = "fallback"

    def __init__(self, predict, background: pd.DataFrame | None = None, max_background: int = 20):
        self.predict = predict
        self.background = background.head(max_background) if background is not None else None

    def explain(self, frame):
        predictions, scores, self.task = _scores(self.predict, frame)
        labels = None
        if scores is not None and scores.shape[1] > 1:
            labels = [str(c)[2:] for c in self.predict(frame.head(1)).columns if str(c).startswith("p_")]
        background = self.background if self.background is not None and len(self.background) else frame
        out = []
        for i in range(len(frame)):
            row = frame.iloc[[i]]
            full = _class_score(predictions, scores, labels, i, predictions[i])
            named = {}
            for column in frame.columns:
                if column not in background.columns:
                    continue
                variants = pd.concat([row] * len(background), ignore_index=True)
                variants[column] = background[column].to_numpy()
                vp, vs, _ = _scores(self.predict, variants)
                drops = [full - _class_score(vp, vs, labels, j, predictions[i]) for j in range(len(variants))]
                named[f"{column} = {row.iloc[0][column]}"] = float(np.mean(drops))
            ranked = _rank(named)
            out.append(Explanation(predictions[i], ranked, sentence(predictions[i], ranked, self.task), self.method,
                                   score=full))
        return out


_TREES = ("DecisionTree", "RandomForest", "ExtraTrees", "GradientBoosting", "HistGradientBoosting", "XGB", "LGBM")


def _names_features(featurizer) -> bool:
    try:
        return featurizer is None or len(featurizer.get_feature_names_out()) > 0
    except (AttributeError, ValueError, TypeError):  # e.g. a custom column step without get_feature_names_out
        return False


def explainer_for(pyfunc_model, background: pd.DataFrame | None = None) -> Explainer:
    """The explainer that fits a loaded ``mlflow.pyfunc`` model (see the module's docstring)."""
    flavors = pyfunc_model.metadata.flavors
    loader = flavors.get("python_function", {}).get("loader_module")
    if loader == "mlflow.sklearn":
        raw = pyfunc_model.get_raw_model()
        featurizer, _, estimator = _split_pipeline(raw)
        kind = type(estimator).__name__
        if _names_features(featurizer):  # else a step cannot name its outputs: the model-agnostic fallback
            if hasattr(estimator, "coef_") and not kind.startswith(("SVC", "NuSVC", "SVR")) or kind == "LinearSVC":
                return LinearExplainer(raw)
            if kind.startswith(_TREES):
                return TreeExplainer(raw)
    signature = pyfunc_model.metadata.signature
    inputs = signature.inputs if signature is not None else None
    if inputs is not None and inputs.is_tensor_spec():
        raise InvalidInput("this model takes a tensor; explanations need named columns")
    names = inputs.input_names() if inputs is not None else []
    types = [str(s.type).removeprefix("DataType.") for s in inputs.inputs] if inputs is not None else []
    if len(names) == 1 and types == ["string"]:
        return OcclusionExplainer(pyfunc_model.predict, names[0])
    return FallbackExplainer(pyfunc_model.predict, background)


def input_example(pyfunc_model, path) -> pd.DataFrame | None:
    """The model's logged input example, as a background sample for the fallback (None if absent)."""
    try:
        from mlflow.models import Model

        example = Model.load(str(path)).load_input_example(str(path))
    except Exception:  # noqa: BLE001 - no example: the fallback uses the request's rows
        return None
    return example if isinstance(example, pd.DataFrame) else None


class ModelExplainer:
    """A registered version loaded for explaining: checks inputs as serving does, then explains."""

    def __init__(self, local, served: dict | None = None):
        import mlflow.pyfunc

        self.local = local
        self.model = mlflow.pyfunc.load_model(str(local.path))
        self.signature = self.model.metadata.signature
        self.explainer = explainer_for(self.model, input_example(self.model, local.path))
        self.served = served or {"name": local.version.name, "version": local.version.version}

    def explain(self, payload, params: dict | None = None) -> list[Explanation]:
        from serving.batching import Columns
        from serving.dataplane import prepare

        if isinstance(payload, list) and payload and all(isinstance(r, dict) for r in payload):
            payload = pd.DataFrame.from_records(payload)
        request = prepare(payload, params, self.signature, self.local.metadata)
        if isinstance(request.data, Columns):
            request.data = request.data.frame()
        if not isinstance(request.data, pd.DataFrame):
            raise InvalidInput("explanations need named columns: send dataframe_split, dataframe_records or CSV")
        if len(request.data) > MAX_ROWS:
            raise InvalidInput(f"too many rows to explain: {len(request.data)} (at most {MAX_ROWS} per request)")
        rows = self.explainer.explain(request.data)
        for row in rows:
            row.model = dict(self.served)
        return rows


def explain(name: str, payload, ref: str = "champion", settings=None) -> list[Explanation]:
    """Explain ``payload`` (a frame, or records) with version/alias ``ref`` of ``name``, as served."""
    from registry import resolve

    local = resolve(name, ref, settings=settings)
    served = {"name": name, "version": local.version.version, "alias": None if str(ref).isdigit() else ref}
    return ModelExplainer(local, served).explain(payload)


MAX_ROWS = 100  # explanations cost a model call per word or column; keep requests small


__all__ = ["Explainer", "Explanation", "FallbackExplainer", "LinearExplainer", "OcclusionExplainer", "TreeExplainer",
           "ModelExplainer", "explain", "explainer_for", "input_example", "sentence"]
