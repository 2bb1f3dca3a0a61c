"""Why a served model gave each answer: signed contributions, a base value and one plain sentence per row.

Every explanation states its ``method``, its ``units`` and its ``base_value``: the
contributions sum to the explained output (``score``) minus the base value. The
method follows the model (:func:`explainer_for` picks it from the loaded model):

* ``linear`` -- a scikit-learn pipeline ending in a linear model (``coef_``): exact
  contributions ``x_j * coef_kj`` of the predicted class ``k`` (log-odds, or the
  target's unit); the base value is the intercept.
* ``tree_shap`` -- a pipeline ending in boosted trees whose inputs are the raw
  columns (numbers, categories, dates): SHAP's ``TreeExplainer``, *interventional*
  against the background rows; the base value is the model's mean output over them
  (log-odds for classifiers).
  Inputs are first moved to float32-exact points of the same tree cells (SHAP's
  trees compare in float32; scikit-learn's histogram boosting in float64).
* ``sampling_shapley`` -- anything else with named columns (random forests and
  single trees -- SHAP 0.51's interventional values did not add up to a forest's
  output here, by up to 1.1 ppb on a 40 ppb model --, trees behind text features or
  an SVD, an SVM, a Paddle MLP): interventional Shapley values
  estimated by permutation sampling, one permutation per background row (each
  reversed for the next row). A column's absence is the background row's value;
  a word's absence is its removal from the text. Each permutation's steps add up
  exactly, so the contributions sum to the score minus the mean over the same
  background (the base value).
* ``occlusion`` -- a model that reads one text column (the MiniLM router): each
  word is removed in turn; its weight is the predicted class's score with the word
  minus the score without it.

The background is the sample of training rows logged with the model
(``explain/background.parquet`` in the model folder, at least 100 rows); a model
registered before backgrounds were stored falls back to its logged input example,
and the explanation says so (``background_rows``, ``background``).

Contributions are grouped back to the raw input column with the row's own value
(``month = Feb``, ``Solar.R = missing``); a linear model's text columns are named
as the words of the text (character n-grams shared out among the words that
contain them). Readable names and units come from the model's metadata
(``columns: {Temp: {label: Temperature, unit: °F}}``, from the use-case file).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from civicml.answers import Answer, probability_columns, read_probabilities, row_confidence, stable_answer
from civicml.errors import InvalidInput

TOP = 6
MAX_ROWS = 100  # explanations cost many model calls per row; keep requests small
MIN_BACKGROUND = 100  # rows of the background sample logged with a model
BACKGROUND_FILE = "explain/background.parquet"  # inside the logged model's folder
MAX_WORDS = 40  # words of a text column that are players of their own (the rest stay in every coalition)
_EDGE_PUNCT = re.compile(r"^\W+|\W+$")


@dataclass
class Explanation:
    """One row's answer and why: ``sum(contributions) == score - base_value`` (in ``units``)."""

    prediction: Any
    contributions: list[tuple[str, float]]  # strongest first, signed toward the prediction
    sentence: str
    method: str
    base_value: float | None = None  # intercept (linear), mean output over the background (shap, sampling)
    score: float | None = None  # the explained output: decision value, probability, or prediction
    units: str = ""  # "log-odds", "probability", the target's unit
    background_rows: int = 0  # rows of the reference the contributions were measured against
    background: str = ""  # where those rows came from
    model: dict | None = field(default=None)  # the served version: name, version, alias, runtime
    confidence: dict | None = None  # the answer's confidence (civicml.answers.row_confidence): band or interval

    @property
    def base(self) -> float | None:
        return self.base_value

    def to_dict(self, top: int = TOP) -> dict:
        out = asdict(self)
        out["contributions"] = [{"feature": f, "weight": round(float(w), 6)}
                                for f, w in self.contributions[:top]]
        out["prediction"] = _plain(self.prediction)
        return out


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


# -- background ---------------------------------------------------------------------------------
def background_sample(frame: pd.DataFrame, rows: int = 200, seed: int = 0) -> pd.DataFrame:
    """The rows logged with a model as its explanations' reference: a seeded sample of training rows."""
    return frame.sample(min(rows, len(frame)), random_state=seed).reset_index(drop=True)


def stored_background(path) -> tuple[pd.DataFrame | None, str]:
    """(rows, where they came from) for a local model folder: the logged background, else the input example."""
    folder = Path(path)
    for root in (folder, folder / "model"):
        file = root / BACKGROUND_FILE
        if file.is_file():
            return pd.read_parquet(file), "training sample logged with the model"
    example = input_example(None, path)
    if example is not None:
        return example, "input example (no background stored with this version)"
    return None, "none"


def input_example(pyfunc_model, path) -> pd.DataFrame | None:
    """The model's logged input example (None if absent)."""
    try:
        from mlflow.models import Model

        example = Model.load(str(path)).load_input_example(str(path))
    except Exception:  # noqa: BLE001 - no example
        return None
    return example if isinstance(example, pd.DataFrame) else None


# -- naming: readable column names and the row's own values -------------------------------------
class Columns:
    """Readable names and units of input columns (``metadata["columns"]``: ``{col: {label, unit}}``)."""

    def __init__(self, declared: dict | None = None):
        self.declared = {str(k): dict(v or {}) for k, v in (declared or {}).items() if isinstance(v, dict)}

    def label(self, column: str) -> str:
        return str(self.declared.get(str(column), {}).get("label") or column)

    def unit(self, column: str) -> str:
        return str(self.declared.get(str(column), {}).get("unit") or "")

    def named(self, column: str, value) -> str:
        """``Temp = 62 °F``; ``Solar.R = missing``."""
        text = value_text(value)
        unit = self.unit(column) if text != "missing" else ""
        return f"{self.label(column)} = {text}{' ' + unit if unit else ''}"


def value_text(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA or value is pd.NaT:
        return "missing"
    if isinstance(value, (np.floating, float)):
        return f"{float(value):.0f}" if float(value).is_integer() else f"{float(value):.4g}"
    if isinstance(value, np.generic):
        value = value.item()
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _text_tokens(vectorizer, text: str) -> list[str]:
    return vectorizer.build_preprocessor()(text).split()


def _word_key(token: str) -> str:
    return _EDGE_PUNCT.sub("", token) or token


def _last_step(trans):
    from sklearn.pipeline import Pipeline

    return trans.steps[-1][1] if isinstance(trans, Pipeline) else trans


def _input_columns(cols) -> list[str]:
    if isinstance(cols, str):
        return [cols]
    return [str(c) for c in (cols if cols is not None else [])]


class _Namer:
    """Turns a vector of contributions over a featurizer's outputs into {readable name: weight}.

    Outputs of a text vectorizer are named as words (``words=True``; a linear model's); every other
    output, and text when ``words`` is False, is summed into its raw input column, named with the row's
    own value (``month = Feb``) -- never with a category the row does not have.
    """

    def __init__(self, featurizer, columns: Columns, words: bool = True):
        from sklearn.compose import ColumnTransformer

        self.columns, self.words = columns, words
        self.parts = []  # (slice, kind, transformer, input columns)
        if isinstance(featurizer, ColumnTransformer):
            for name, trans, cols in featurizer.transformers_:
                if name == "remainder" or trans == "drop":
                    continue
                self.parts.append((featurizer.output_indices_[name], self._kind(trans), trans, _input_columns(cols)))
        elif featurizer is not None:
            n = len(featurizer.get_feature_names_out())
            names = list(getattr(featurizer, "feature_names_in_", []))
            self.parts.append((slice(0, n), self._kind(featurizer), featurizer, [str(c) for c in names]))

    @staticmethod
    def _kind(trans) -> str:
        from sklearn.feature_extraction.text import CountVectorizer

        last = _last_step(trans)
        if isinstance(last, CountVectorizer):  # TfidfVectorizer is one
            return "chars" if str(last.analyzer).startswith("char") else "words"
        return "plain"

    def text_columns(self) -> list[str]:
        return [cols[0] for _, kind, _, cols in self.parts if kind in ("words", "chars") and len(cols) == 1]

    def owners(self, n: int, feature_names: list[str]) -> list[str | None]:
        """The raw input column of each of ``n`` outputs (None where unknown)."""
        out: list[str | None] = [None] * n
        for sl, kind, trans, cols in self.parts:
            idx = np.arange(n)[sl]
            if len(cols) == 1:
                for i in idx:
                    out[i] = cols[0]
                continue
            try:
                names = [str(x) for x in trans.get_feature_names_out()]
            except (AttributeError, ValueError, TypeError):
                names = [feature_names[i] for i in idx]
            by_length = sorted(cols, key=len, reverse=True)
            for i, name in zip(idx, names):
                out[i] = next((c for c in by_length if name == c or name.startswith(c + "_")), None)
        return out

    def name(self, weights: np.ndarray, row: pd.Series | None, feature_names: list[str],
             values: np.ndarray | None = None) -> dict[str, float]:
        out: dict[str, float] = {}
        absent = (lambda i: values is not None and i < len(values) and values[i] == 0)

        def add(key, w):
            out[key] = out.get(key, 0.0) + float(w)

        owners = self.owners(len(weights), feature_names)
        for sl, kind, trans, cols in self.parts:
            if kind not in ("words", "chars") or not self.words:
                continue
            vectorizer = _last_step(trans)
            vocab = vectorizer.get_feature_names_out()
            text = str(row[cols[0]]) if row is not None and cols else ""
            tokens = [_word_key(t) for t in _text_tokens(vectorizer, text)]
            for i in np.arange(len(weights))[sl]:
                owners[i] = "(named)"  # words are named here, not by column
                if weights[i] == 0.0:
                    continue
                gram = vocab[i - sl.start]
                if absent(i):
                    add(f"no '{gram.strip()}'" + (" (characters)" if kind == "chars" else ""), weights[i])
                elif kind == "words":
                    add(f"'{gram}'", weights[i])
                else:
                    found = sorted({t for t in tokens if gram.strip() in f" {t} " or gram in f" {t} "})
                    if not found:  # a gram of a token that punctuation split differently: keep it whole
                        add(f"'{gram.strip()}' (characters)", weights[i])
                    for t in found:
                        add(f"'{t}'", weights[i] / len(found))
        for i, column in enumerate(owners):
            if column == "(named)" or weights[i] == 0.0:
                continue
            if column is None:
                add(feature_names[i] if i < len(feature_names) else f"feature {i}", weights[i])
            else:
                add(self.columns.named(column, row[column] if row is not None and column in row.index else None),
                    weights[i])
        return out


def _rank(named: dict[str, float]) -> list[tuple[str, float]]:
    return sorted(named.items(), key=lambda kv: -abs(kv[1]))


# -- the sentence -------------------------------------------------------------------------------
def _amount(weight: float, units: str) -> str:
    if units == "probability":
        return f"{abs(weight):.2f}"
    return f"{abs(weight):.2g}" if abs(weight) < 10 else f"{abs(weight):.0f}"


def sentence(prediction, contributions: list[tuple[str, float]], task: str = "classification", *,
             base_value: float | None = None, units: str = "", probability: float | None = None,
             typical: bool = True, top: int = 3) -> str:
    """One plain sentence: the answer, the strongest reasons by magnitude with their signs, and missing inputs.

    ``Predicted 19 (typical 42). Temp = 62 lowered it by 24, Wind = 14 by 10; Solar.R was missing.``
    ``Answered 'water' (62%); 'river' raised it most (+0.31), 'park' lowered it (-0.12).``
    """
    missing = [f.split(" = ")[0] for f, _ in contributions if f.endswith(" = missing")]
    reasons = [(f, w) for f, w in contributions if not f.endswith(" = missing") and w != 0][:top]
    if task == "regression" and isinstance(prediction, (int, float, np.number)):
        value = _amount(float(prediction), "")
        answer = f"Predicted {'-' if prediction < 0 else ''}{value}"
        if base_value is not None:
            answer += f" ({'typical' if typical else 'base'} {'-' if base_value < 0 else ''}{_amount(base_value, '')})"
        parts, last = [], None
        for f, w in reasons:
            verb = "raised" if w > 0 else "lowered"
            parts.append(f"{f} {verb + ' it ' if verb != last else ''}by {_amount(w, units)}")
            last = verb
        text = answer + ". " + (", ".join(parts) if parts else "No single input stood out")
    else:
        answer = f"Answered '{prediction}'" + (f" ({probability:.0%})" if probability is not None else "")
        parts = []
        for j, (f, w) in enumerate(reasons):
            verb = "raised" if w > 0 else "lowered"
            parts.append(f"{f} {verb} it{' most' if j == 0 else ''} ({'+' if w > 0 else '-'}{_amount(w, units)})")
        text = answer + ("; " + ", ".join(parts) if parts else "; no single input stood out")
        if units and units != "probability" and base_value is not None:
            text += f" (in {units}, from a base of {base_value:.2g})"
        elif units == "probability" and base_value is not None:
            text += f" (typical {base_value:.0%})"
    if missing:
        text += f"; {' and '.join(missing[:3])} {'was' if len(missing) == 1 else 'were'} missing"
    return text + "."


# -- what a model outputs, in stated units ------------------------------------------------------
class Output:
    """A model's explained output per row and class: ``scores(frame)`` -> (predictions, scores, classes)."""

    def __init__(self, predict: Callable, units: str, classes: list | None):
        self.predict, self.units, self.classes = predict, units, classes

    def scores(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        return self.predict(frame)

    def of(self, scores: np.ndarray | None, predictions, label) -> np.ndarray:
        """The score of class ``label`` (a classifier) or the value (a regressor) for each row."""
        if scores is None:  # a model that answers labels only: 1 where it gives this answer
            return (np.asarray(predictions, dtype=object) == label).astype(float)
        if self.classes is None or scores.shape[1] == 1 and len(self.classes or []) != 1:
            if self.classes is not None and len(self.classes) == 2:  # one margin toward classes[1]
                return scores[:, 0] if label == self.classes[1] else -scores[:, 0]
            return scores[:, 0]
        if label not in self.classes:
            return (np.asarray(predictions) == label).astype(float)
        return scores[:, self.classes.index(label)]


def sklearn_output(model, target_unit: str = "") -> Output:
    """Probabilities of a scikit-learn classifier (else its decision values), or a regressor's predictions."""
    classes = getattr(model, "classes_", None)
    if classes is None:
        def regress(frame):
            p = np.asarray(model.predict(frame), dtype=float)
            return p, p[:, None]
        return Output(regress, target_unit or "target units", None)
    classes = list(classes)
    try:
        model.predict_proba  # noqa: B018 - SVC without probability estimates raises AttributeError here
        proba = True
    except AttributeError:
        proba = False

    def classify(frame):
        if proba:
            p = np.asarray(model.predict_proba(frame), dtype=float)
            return np.asarray(classes, dtype=object)[p.argmax(axis=1)], p
        d = np.asarray(model.decision_function(frame), dtype=float)
        d = d[:, None] if d.ndim == 1 else d
        return np.asarray(model.predict(frame), dtype=object), d
    return Output(classify, "probability" if proba else "decision value", classes)


class PyfuncOutput(Output):
    """The same for a pyfunc-style ``predict``: a frame with ``label`` and ``p_<class>`` (probability), numbers
    (the target's unit) or labels only (``indicator``: 1 where the model gives the answer explained)."""

    def __init__(self, predict: Callable, labels: list | None = None, target_unit: str = ""):
        super().__init__(predict, "probability" if labels else (target_unit or "target units"), labels)
        self.target_unit = target_unit

    def scores(self, frame):
        out = self.predict(frame)
        if isinstance(out, pd.DataFrame):
            found = read_probabilities(out)
            if "label" in out.columns and found is not None:
                self.units, self.classes = "probability", found[0]
                return out["label"].to_numpy(dtype=object), found[1]
            out = out.iloc[:, 0]
        values = np.asarray(out).ravel()
        if values.dtype.kind in "fiu":
            self.units = self.target_unit or "target units"
            return values, values.astype(float)[:, None]
        self.units = "indicator"
        return values.astype(object), None


def pyfunc_output(predict, labels: list | None = None, target_unit: str = "") -> Output:
    return PyfuncOutput(predict, labels, target_unit)


# -- explainers ---------------------------------------------------------------------------------
class Explainer:
    method = "none"
    task = "classification"
    units = ""
    background_rows = 0
    background_source = "none"
    typical = True  # the base value is a mean over a reference (else a model constant, the intercept)

    def explain(self, frame: pd.DataFrame) -> list[Explanation]:
        raise NotImplementedError

    def _explanation(self, prediction, ranked, score, base, probability=None) -> Explanation:
        text = sentence(prediction, ranked, self.task, base_value=base, units=self.units,
                        probability=probability, typical=self.typical)
        return Explanation(prediction, ranked, text, self.method, base_value=None if base is None else float(base),
                           score=None if score is None else float(score), units=self.units,
                           background_rows=self.background_rows, background=self.background_source)


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


def _dense(X) -> np.ndarray:
    return np.asarray(X.todense()) if hasattr(X, "todense") else np.asarray(X, dtype=float)


class _PipelineExplainer(Explainer):
    words = True

    def __init__(self, model, columns: Columns | None = None, target_unit: str = ""):
        self.model = model
        self.featurizer, self.projection, self.estimator = _split_pipeline(model)
        self.columns = columns or Columns()
        self.namer = _Namer(self.featurizer, self.columns, words=self.words)
        self.classes = getattr(self.estimator, "classes_", None)
        self.task = "classification" if self.classes is not None else "regression"
        self.target_unit = target_unit

    def _features(self, frame):
        X = self.featurizer.transform(frame) if self.featurizer is not None else frame
        names = list(self.featurizer.get_feature_names_out()) if self.featurizer is not None \
            else [str(c) for c in getattr(frame, "columns", range(np.shape(X)[1]))]
        return X, names

    def _named(self, frame, X, names, i: int, phi: np.ndarray) -> list[tuple[str, float]]:
        x = self._row_dense(X, i)
        row = frame.iloc[i] if hasattr(frame, "iloc") else None
        if self.featurizer is None and row is not None:  # a bare estimator on the frame: one output per column
            return _rank({self.columns.named(c, row[c]): float(w) for c, w in zip(frame.columns, phi) if w != 0})
        return _rank(self.namer.name(phi, row, names, x))

    def _row_dense(self, X, i) -> np.ndarray:
        row = X[i] if not hasattr(X, "iloc") else X.iloc[i]
        return np.asarray(row.todense()).ravel() if hasattr(row, "todense") else np.asarray(row, dtype=float).ravel()

    def _probability(self, frame, i, prediction) -> float | None:
        if self.classes is None or not hasattr(self.model, "predict_proba"):
            return None
        try:
            p = self.model.predict_proba(frame.iloc[[i]])[0]
        except AttributeError:
            return None
        return float(p[list(self.classes).index(prediction)])


class LinearExplainer(_PipelineExplainer):
    """Exact: contribution_j = x_j * coef_kj for the predicted class k; sum + intercept = decision function."""

    method = "linear"
    typical = False

    def __init__(self, model, columns: Columns | None = None, target_unit: str = ""):
        super().__init__(model, columns, target_unit)
        self.units = "log-odds" if self.classes is not None else (target_unit or "target units")

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
            if self.projection is not None:
                phi = self._back_project(phi, self._row_dense(X, i))
            base = sign * float(intercept[k] if len(intercept) > k else intercept[0])
            ranked = self._named(frame, X, names, i, phi)
            out.append(self._explanation(predictions[i], ranked, float(phi.sum() + base), base,
                                         self._probability(frame, i, predictions[i])))
        return out

    def _back_project(self, phi: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Exact for a linear model: coef . (V x) = (V^T coef) . x, so x_j * (V^T coef)_j shares the sum out."""
        parts = x[None, :] * self.projection.components_
        z = parts.sum(axis=1)
        live = np.abs(z) > 1e-12
        return ((np.where(live, phi, 0.0) / np.where(live, z, 1.0))[:, None] * parts).sum(axis=0)


_BOOSTED = ("GradientBoosting", "HistGradientBoosting", "XGB", "LGBM")


class TreeExplainer(_PipelineExplainer):
    """SHAP's interventional ``TreeExplainer`` against the background rows; values + base value = output."""

    method = "tree_shap"
    words = False

    def __init__(self, model, background: pd.DataFrame, columns: Columns | None = None, target_unit: str = "",
                 max_background: int = 200):
        super().__init__(model, columns, target_unit)
        import shap

        if background is None or not len(background):
            raise InvalidInput("tree SHAP needs background rows")
        kind = type(self.estimator).__name__
        if self.classes is None:
            self.units = target_unit or "target units"
        else:
            self.units = "log-odds" if kind.startswith(_BOOSTED) else "probability"
        background = background.head(max_background)
        self.background_rows = len(background)
        Xb, _ = self._features(background)
        Zb = _dense(self.projection.transform(Xb) if self.projection is not None else Xb)
        probe = shap.TreeExplainer(self.estimator, data=Zb[:1], feature_perturbation="interventional")
        self._cells = _Cells(probe.model)
        self._shap = shap.TreeExplainer(self.estimator, data=self._cells(Zb), feature_perturbation="interventional")

    def explain(self, frame):
        X, names = self._features(frame)
        Z = _dense(self.projection.transform(X) if self.projection is not None else X)
        predictions = self.estimator.predict(Z)
        values = np.asarray(self._shap.shap_values(self._cells(Z), check_additivity=False))
        expected = np.atleast_1d(self._shap.expected_value)
        if values.ndim == 2:  # one output (regression, or a binary margin toward classes_[1])
            values = values[:, :, None]
        out = []
        for i in range(Z.shape[0]):
            sign = 1.0
            if self.classes is not None and values.shape[2] == len(self.classes):
                k = int(np.searchsorted(self.classes, predictions[i]))
            else:
                k = 0
                if self.classes is not None and predictions[i] != self.classes[-1]:
                    sign = -1.0
            phi = sign * values[i, :, k]
            base = sign * float(expected[k] if len(expected) > k else expected[0])
            ranked = self._named(frame, X, names, i, phi)
            out.append(self._explanation(predictions[i], ranked, float(phi.sum() + base), base,
                                         self._probability(frame, i, predictions[i])))
        return out


class _Cells:
    """Moves each value to a float32-exact point of the same cell of every split on its feature.

    SHAP's tree code compares in float32; scikit-learn's histogram boosting compares float64 inputs
    with float64 thresholds, so a value just above a threshold can cross it in SHAP (the values then no
    longer add up to the model's output). The point chosen (the largest float32 at or below the next
    threshold above the value) takes the same branch in both, so the model's predictions are unchanged.
    """

    def __init__(self, ensemble):
        internal = ensemble.children_left >= 0
        self.cuts = {}
        for f in np.unique(ensemble.features[internal]):
            t = np.unique(ensemble.thresholds[internal & (ensemble.features == f)])
            down = t.astype(np.float32)
            down = np.where(down.astype(np.float64) > t, np.nextafter(down, np.float32(-np.inf)), down)
            top = np.nextafter(np.float32(t[-1]), np.float32(np.inf))
            self.cuts[int(f)] = (t, down.astype(np.float64), float(max(top, t[-1])))

    def __call__(self, Z: np.ndarray) -> np.ndarray:
        Z = np.array(Z, dtype=np.float64)
        for f, (t, down, top) in self.cuts.items():
            column = Z[:, f]
            ok = ~np.isnan(column)
            idx = np.searchsorted(t, column[ok], side="left")  # first threshold >= value: the value goes left there
            column[ok] = np.where(idx < len(t), down[np.minimum(idx, len(t) - 1)], np.maximum(top, column[ok]))
            Z[:, f] = column
        return Z


class SamplingExplainer(Explainer):
    """Interventional Shapley values by permutation sampling over columns and the words of text columns.

    For background row ``b`` a random order of the players (the previous order reversed for every
    other row) walks from the background row (text columns empty) to the explained row; each player
    is credited with the change of the explained output when it joins. The walk's steps add up to
    ``f(row) - f(start)``, so the mean over the background adds up to the score minus the base value.
    """

    method = "sampling_shapley"

    def __init__(self, output: Output, background: pd.DataFrame | None, text_columns=(),
                 columns: Columns | None = None, max_background: int = 100, seed: int = 0):
        self.output, self.columns, self.seed = output, columns or Columns(), seed
        self.text = [str(c) for c in text_columns]
        self.background = background.head(max_background).reset_index(drop=True) if background is not None else None
        self.background_rows = 0 if self.background is None else len(self.background)
        self.units = output.units
        self.task = "classification" if output.classes is not None or "probab" in output.units else "regression"

    def explain(self, frame):
        frame = frame.reset_index(drop=True)
        predictions, scores = self.output.scores(frame)
        self.units = self.output.units
        numeric = np.asarray(predictions).dtype.kind in "fiu"
        self.task = "regression" if self.output.classes is None and numeric else "classification"
        background = self.background if self.background is not None and len(self.background) else frame
        if self.background is None:
            self.background_rows, self.background_source = len(frame), "the request's own rows"
        out = []
        for i in range(len(frame)):
            row = frame.iloc[i]
            label = predictions[i]
            score = float(self.output.of(scores[[i]] if scores is not None else None, predictions[[i]], label)[0])
            phi, base, names = self._shapley(row, background, label)
            named: dict[str, float] = {}
            for name, w in zip(names, phi):
                named[name] = named.get(name, 0.0) + float(w)
            probability = score if self.units == "probability" else None
            out.append(self._explanation(label, _rank(named), score, base, probability))
        return out

    def _players(self, row: pd.Series, background: pd.DataFrame):
        players, names, words = [], [], {}
        for c in row.index:
            c = str(c)
            if c in self.text:
                tokens = str(row[c]).split() if row[c] is not None and row[c] == row[c] else []
                words[c] = tokens
                for j, w in enumerate(tokens[:MAX_WORDS]):
                    players.append(("word", c, j))
                    names.append(f"'{_word_key(w)}'")
            elif c in background.columns:
                players.append(("column", c, None))
                names.append(self.columns.named(c, row[c]))
        return players, names, words

    def _shapley(self, row: pd.Series, background: pd.DataFrame, label):
        players, names, words = self._players(row, background)
        B, P = len(background), len(players)
        rng = np.random.default_rng(self.seed)
        present = np.zeros((B, P + 1, P), dtype=bool)
        orders = []
        for b in range(B):
            order = orders[-1][::-1] if b % 2 else rng.permutation(P)
            orders.append(order)
            for t, p in enumerate(order):
                present[b, t + 1:, p] = True
        present = present.reshape(B * (P + 1), P)
        states = background.iloc[np.repeat(np.arange(B), P + 1)].reset_index(drop=True).copy()
        for c in row.index:  # columns the background lacks keep the row's value
            if str(c) not in background.columns or str(c) in self.text:
                states[c] = [row[c]] * len(states)
        for p, (kind, c, _) in enumerate(players):
            if kind == "column":
                states[c] = states[c].astype(object)
                states.loc[present[:, p], c] = row[c]
        for c, tokens in words.items():
            idx = [p for p, (kind, col, _) in enumerate(players) if kind == "word" and col == c]
            rest = " ".join(tokens[MAX_WORDS:])
            texts = []
            for mask in present[:, idx]:
                kept = [tokens[j] for j, m in zip(range(len(idx)), mask) if m]
                texts.append(" ".join(kept + ([rest] if rest else [])))
            states[c] = texts
        states = self._typed(states, row)
        predicted, scores = self.output.scores(states)
        f = self.output.of(scores, predicted, label).reshape(B, P + 1)
        phi = np.zeros(P)
        for b, order in enumerate(orders):
            phi[order] += np.diff(f[b])
        return phi / max(B, 1), float(f[:, 0].mean()), names

    @staticmethod
    def _typed(states: pd.DataFrame, row: pd.Series) -> pd.DataFrame:
        for c in states.columns:
            if states[c].dtype == object and pd.api.types.is_numeric_dtype(type(row[c])) \
                    and not isinstance(row[c], (str, bool)):
                try:
                    states[c] = pd.to_numeric(states[c])
                except (TypeError, ValueError):
                    pass
        return states


class FallbackExplainer(SamplingExplainer):
    """:class:`SamplingExplainer` over whole columns for a bare ``predict`` (pyfunc-style outputs)."""

    def __init__(self, predict, background: pd.DataFrame | None = None, max_background: int = 100):
        super().__init__(pyfunc_output(predict), background, max_background=max_background)


class OcclusionExplainer(Explainer):
    """Word occlusion for a model that reads one text column: weight = score(with) - score(without)."""

    method = "occlusion"

    def __init__(self, predict, text_column: str, labels: list[str] | None = None):
        self.predict, self.column, self.labels = predict, text_column, labels

    def explain(self, frame):
        output = pyfunc_output(self.predict, self.labels)
        predictions, scores = output.scores(frame)
        self.units = output.units
        self.task = "regression" if output.classes is None and np.asarray(predictions).dtype.kind in "fiu" \
            else "classification"
        out = []
        for i in range(len(frame)):
            words = str(frame.iloc[i][self.column]).split()
            variants = []
            for j in range(len(words)):
                variant = frame.iloc[[i]].copy()
                variant[self.column] = " ".join(words[:j] + words[j + 1:]) or "."
                variants.append(variant)
            full = float(output.of(scores[[i]] if scores is not None else None, predictions[[i]], predictions[i])[0])
            named: dict[str, float] = {}
            if variants:
                vpred, vscores = output.scores(pd.concat(variants, ignore_index=True))
                without = output.of(vscores, vpred, predictions[i])
                for j, w in enumerate(words):
                    key = f"'{_word_key(w)}'"
                    named[key] = named.get(key, 0.0) + float(full - without[j])
            probability = full if self.units == "probability" else None
            e = self._explanation(predictions[i], _rank(named), full, None, probability)
            out.append(e)
        return out


_TREES = ("DecisionTree", "RandomForest", "ExtraTrees", "GradientBoosting", "HistGradientBoosting", "XGB", "LGBM")


def _names_features(featurizer) -> bool:
    try:
        return featurizer is None or len(featurizer.get_feature_names_out()) > 0
    except (AttributeError, ValueError, TypeError):  # e.g. a custom column step without get_feature_names_out
        return False


def explainer_for(pyfunc_model, background: pd.DataFrame | None = None, source: str = "") -> Explainer:
    """The explainer that fits a loaded ``mlflow.pyfunc`` model (see the module's docstring)."""
    meta = pyfunc_model.metadata.metadata or {}
    columns = Columns(meta.get("columns"))
    target_unit = columns.unit(meta["target"]) if meta.get("target") else ""
    explainer = _explainer(pyfunc_model, background, columns, target_unit, meta)
    if explainer.method in ("linear", "occlusion"):
        explainer.background_source = "none (this method needs no reference rows)"
    elif background is not None and len(background):
        explainer.background_source = source or "background rows given"
    return explainer


def _explainer(pyfunc_model, background, columns: Columns, target_unit: str, meta: dict) -> Explainer:
    loader = pyfunc_model.metadata.flavors.get("python_function", {}).get("loader_module")
    if loader == "mlflow.sklearn":
        raw = pyfunc_model.get_raw_model()
        featurizer, projection, estimator = _split_pipeline(raw)
        kind = type(estimator).__name__
        if _names_features(featurizer):  # else a step cannot name its outputs: the model-agnostic method
            if hasattr(estimator, "coef_") and not kind.startswith(("SVC", "NuSVC", "SVR")) or kind == "LinearSVC":
                return LinearExplainer(raw, columns, target_unit)
            text = _Namer(featurizer, columns).text_columns()
            if kind.startswith(_BOOSTED) and projection is None and not text and background is not None \
                    and len(background):
                return TreeExplainer(raw, background, columns, target_unit)
            return SamplingExplainer(sklearn_output(raw, target_unit), background, text, columns)
        return SamplingExplainer(sklearn_output(raw, target_unit), background, (), columns)
    signature = pyfunc_model.metadata.signature
    inputs = signature.inputs if signature is not None else None
    if inputs is not None and inputs.is_tensor_spec():
        raise InvalidInput("this model takes a tensor; explanations need named columns")
    names = inputs.input_names() if inputs is not None else []
    types = [str(s.type).removeprefix("DataType.") for s in inputs.inputs] if inputs is not None else []
    if len(names) == 1 and types == ["string"]:
        return OcclusionExplainer(pyfunc_model.predict, names[0])
    return SamplingExplainer(pyfunc_output(pyfunc_model.predict, meta.get("labels"), target_unit), background, (),
                             columns)


class ModelExplainer:
    """A registered version loaded for explaining: checks inputs as serving does, then explains."""

    def __init__(self, local, served: dict | None = None):
        import mlflow.pyfunc

        self.local = local
        self.model = mlflow.pyfunc.load_model(str(local.path))
        self.signature = self.model.metadata.signature
        background, source = stored_background(local.path)
        self.explainer = explainer_for(self.model, background, source)
        self.served = served or {"name": local.version.name, "version": local.version.version}

    def explain(self, payload, params: dict | None = None) -> list[Explanation]:
        from serving.batching import Columns as BatchColumns
        from serving.dataplane import prepare

        if isinstance(payload, list) and payload and all(isinstance(r, dict) for r in payload):
            payload = pd.DataFrame.from_records(payload)
        request = prepare(payload, params, self.signature, self.local.metadata)
        if isinstance(request.data, BatchColumns):
            request.data = request.data.frame()
        if not isinstance(request.data, pd.DataFrame):
            raise InvalidInput("explanations need named columns: send dataframe_split, dataframe_records or CSV")
        if len(request.data) > MAX_ROWS:
            raise InvalidInput(f"too many rows to explain: {len(request.data)} (at most {MAX_ROWS} per request)")
        rows = self.explainer.explain(request.data)
        said = row_confidence(stable_answer(self._answer(request.data), metadata=self.local.metadata))
        for row, confidence in zip(rows, said):
            row.model = dict(self.served)
            row.confidence = confidence
        return rows

    def _answer(self, frame: pd.DataFrame):
        """The model's answer as serving gives it: a scikit-learn classifier's probabilities in the order of
        its labels beside its own labels (the pyfunc gives labels only)."""
        output = self.model.predict(frame)
        labels = (self.local.metadata or {}).get("labels")
        if self.model.metadata.flavors.get("python_function", {}).get("loader_module") != "mlflow.sklearn" \
                or not labels:
            return output
        raw = self.model.get_raw_model()
        classes = [str(c) for c in getattr(raw, "classes_", [])]
        try:
            proba = raw.predict_proba(frame)
        except AttributeError:  # no probabilities (an SVC without them): no confidence
            return output
        if sorted(classes) != sorted(labels):
            return output
        answer = Answer(label=np.asarray(output).reshape(-1).astype(str))
        for label, column in zip(labels, probability_columns(labels)):
            answer[column] = np.asarray(proba[:, classes.index(label)], dtype=np.float64)
        return answer


def explain(name: str, payload, ref: str = "champion", settings=None) -> list[Explanation]:
    """Explain ``payload`` (a frame, or records) with version/alias ``ref`` of ``name``, as served."""
    from registry import is_version_number, resolve

    local = resolve(name, ref, settings=settings)
    served = {"name": name, "version": local.version.version, "alias": None if is_version_number(ref) else ref}
    return ModelExplainer(local, served).explain(payload)


__all__ = ["BACKGROUND_FILE", "Columns", "Explainer", "Explanation", "FallbackExplainer", "LinearExplainer",
           "MIN_BACKGROUND", "ModelExplainer", "OcclusionExplainer", "SamplingExplainer", "TreeExplainer",
           "background_sample", "explain", "explainer_for", "input_example", "sentence", "stored_background"]
