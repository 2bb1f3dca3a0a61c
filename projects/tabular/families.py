"""Model families of a tabular use case, each one scikit-learn ``Pipeline``: preprocessing, then a model.

Preprocessing follows the declared (or guessed) column types and is part of the
logged model, so a served model takes the raw columns:

* numeric: median imputation, standard scaling;
* category / boolean: constant imputation, one-hot with unknown categories ignored;
* date (ISO text): year, month, day, weekday, hour, days since 1970, then imputation;
* text: TF-IDF of words (and, for linear models, more features).

Imbalanced classes: every scikit-learn classifier that takes ``class_weight``
searches it (``None`` or ``balanced``); a binary classifier whose metric weighs the
minority class (:data:`projects.metrics.THRESHOLD_METRICS`) gets a decision threshold
chosen on the validation part (:func:`projects.sklearn_model.with_decision_threshold`).
Every model records the trivial baseline of its training labels for the promotion's
baseline gate.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (HistGradientBoostingClassifier, HistGradientBoostingRegressor, RandomForestClassifier,
                              RandomForestRegressor)
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import SVC, SVR
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from civicml.tabular_transforms import TRUSTED_PREFIX, DateParts, TextColumn
from projects.base import Dataset, FittedModel, ModelFamily, Reporter
from projects.sklearn_model import SAFE_PREFIXES, SklearnModel, with_decision_threshold
from projects.metrics import THRESHOLD_METRICS, baseline_facts
from projects.space import Categorical, Float, Int


def preprocessor(types: Mapping[str, str], features, text_features: int, dense: bool) -> ColumnTransformer:
    by_kind: dict[str, list[str]] = {}
    for column in features:
        by_kind.setdefault(types[column], []).append(column)
    parts = []
    if by_kind.get("numeric"):
        parts.append(("numeric", Pipeline([("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                                           ("scale", StandardScaler())]), by_kind["numeric"]))
    categorical = by_kind.get("category", []) + by_kind.get("boolean", []) + by_kind.get("id", [])
    if categorical:
        parts.append(("category", Pipeline([
            ("impute", SimpleImputer(strategy="constant", fill_value="missing")),
            ("onehot", OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=2, max_categories=60,
                                     sparse_output=not dense))]), categorical))
    if by_kind.get("date"):
        parts.append(("date", Pipeline([("parts", DateParts()),
                                        ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                                        ("scale", StandardScaler())]), by_kind["date"]))
    for column in by_kind.get("text", []):
        parts.append((f"text_{column}", Pipeline([
            ("column", TextColumn()),
            ("tfidf", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2, max_features=text_features,
                                      dtype=np.float32))]), [column]))
    return ColumnTransformer(parts, sparse_threshold=0.0 if dense else 0.3)


class TabularModel(SklearnModel):
    """A fitted pipeline; its skops file may also hold CivicML's two column transformers."""

    trusted_prefixes = SAFE_PREFIXES + (TRUSTED_PREFIX,)


class TabularFamily(ModelFamily):
    """One estimator behind the shared preprocessing; reports the primary metric on validation once."""

    dense = False
    text_features = 2000

    def __init__(self, task: str, types: Mapping[str, str], metric: str):
        self.task = task
        self.types = dict(types)
        self.metric = metric

    def estimator(self, params: Mapping[str, Any]):
        raise NotImplementedError

    def fit(self, train: Dataset, valid: Dataset, params: Mapping[str, Any], reporter: Reporter) -> FittedModel:
        from projects.metrics import compute

        pipeline = Pipeline([("features", preprocessor(self.types, train.features,
                                                       int(params.get("text_features", self.text_features)),
                                                       self.dense)),
                             ("model", self.estimator(params))])
        pipeline.fit(train.X, train.y)
        threshold = None
        if self.classification and self.metric in THRESHOLD_METRICS:
            pipeline, threshold = with_decision_threshold(pipeline, valid.X, valid.y, self.metric)
        reporter.report(0, compute(self.metric, valid.y, pipeline.predict(valid.X)))
        return TabularModel(pipeline, baseline_facts("classification" if self.classification else "regression",
                                                     train.y), threshold)

    @property
    def classification(self) -> bool:
        return self.task == "classification"

    def class_weight(self, params: Mapping[str, Any]):
        """``class_weight`` of a classifier: None (every row counts once) or ``balanced``."""
        return params.get("class_weight") if self.classification else None


# a search dimension of every classifier that takes it; regression ignores it
CLASS_WEIGHT = {"class_weight": Categorical([None, "balanced"])}


class DecisionTree(TabularFamily):
    name = "decision_tree"
    dense = True
    text_features = 300
    space = {"max_depth": Int(2, 30, log=True), "min_samples_leaf": Int(1, 50, log=True), **CLASS_WEIGHT}
    defaults = {"max_depth": 10, "min_samples_leaf": 5, "class_weight": None}

    def estimator(self, p):
        if self.classification:
            return DecisionTreeClassifier(max_depth=int(p["max_depth"]), min_samples_leaf=int(p["min_samples_leaf"]),
                                          class_weight=self.class_weight(p), random_state=int(p.get("seed", 0)))
        return DecisionTreeRegressor(max_depth=int(p["max_depth"]), min_samples_leaf=int(p["min_samples_leaf"]),
                                     random_state=int(p.get("seed", 0)))


class RandomForest(TabularFamily):
    name = "random_forest"
    dense = True
    text_features = 300
    space = {"n_estimators": Int(50, 300, step=50), "max_depth": Int(3, 30, log=True),
             "min_samples_leaf": Int(1, 20, log=True), "max_features": Float(0.1, 1.0), **CLASS_WEIGHT}
    defaults = {"n_estimators": 100, "max_depth": 16, "min_samples_leaf": 1, "max_features": 0.5,
                "class_weight": None}

    def estimator(self, p):
        common = dict(n_estimators=int(p["n_estimators"]), max_depth=int(p["max_depth"]),
                      min_samples_leaf=int(p["min_samples_leaf"]), max_features=float(p["max_features"]),
                      n_jobs=1, random_state=int(p.get("seed", 0)))
        if self.classification:
            return RandomForestClassifier(class_weight=self.class_weight(p), **common)
        return RandomForestRegressor(**common)


class HistGradientBoosting(TabularFamily):
    name = "hist_gradient_boosting"
    dense = True
    text_features = 300
    space = {"learning_rate": Float(0.02, 0.5, log=True), "max_iter": Int(50, 400, step=50),
             "max_leaf_nodes": Int(8, 64, log=True), "min_samples_leaf": Int(5, 80, log=True),
             "l2_regularization": Float(1e-4, 10.0, log=True), **CLASS_WEIGHT}
    defaults = {"learning_rate": 0.1, "max_iter": 100, "max_leaf_nodes": 31, "min_samples_leaf": 20,
                "l2_regularization": 1e-4, "class_weight": None}

    def estimator(self, p):
        common = dict(learning_rate=float(p["learning_rate"]), max_iter=int(p["max_iter"]),
                      max_leaf_nodes=int(p["max_leaf_nodes"]), min_samples_leaf=int(p["min_samples_leaf"]),
                      l2_regularization=float(p["l2_regularization"]), early_stopping=False,
                      random_state=int(p.get("seed", 0)))
        if self.classification:
            return HistGradientBoostingClassifier(class_weight=self.class_weight(p), **common)
        return HistGradientBoostingRegressor(**common)


class SupportVectorMachine(TabularFamily):
    name = "svm"
    space = {"C": Float(0.05, 50.0, log=True), "kernel": Categorical(["linear", "rbf"]), **CLASS_WEIGHT}
    defaults = {"C": 1.0, "kernel": "rbf", "class_weight": None}

    def estimator(self, p):
        if self.classification:
            return SVC(C=float(p["C"]), kernel=p["kernel"], gamma="scale", class_weight=self.class_weight(p),
                       random_state=0)
        return SVR(C=float(p["C"]), kernel=p["kernel"], gamma="scale")


class Linear(TabularFamily):
    name = "linear"
    space = {"C": Float(0.01, 100.0, log=True), **CLASS_WEIGHT}
    defaults = {"C": 1.0, "class_weight": None}

    def estimator(self, p):
        if self.classification:
            return LogisticRegression(C=float(p["C"]), class_weight=self.class_weight(p), max_iter=3000)
        return Ridge(alpha=1.0 / float(p["C"]))


class PaddleMLP(TabularFamily):
    """CivicML's preprocessing, then a PaddlePaddle MLP (``projects/tabular/paddle_mlp.py``: Paddle is
    imported when it trains)."""

    name = "paddle_mlp"
    dense = True
    text_features = 300
    space = {"hidden": Categorical([32, 64, 128, 256]), "layers": Int(1, 3), "dropout": Float(0.0, 0.3),
             "learning_rate": Float(3e-4, 3e-2, log=True), "weight_decay": Float(1e-6, 1e-2, log=True),
             "batch_size": Categorical([64, 128, 256])}
    defaults = {"hidden": 64, "layers": 2, "dropout": 0.1, "learning_rate": 3e-3, "weight_decay": 1e-4,
                "batch_size": 64, "epochs": 40, "patience": 8}

    def fit(self, train: Dataset, valid: Dataset, params: Mapping[str, Any], reporter: Reporter) -> FittedModel:
        from projects.tabular.paddle_mlp import fit_mlp

        return fit_mlp(self, train, valid, params, reporter)


FAMILIES = {f.name: f for f in (DecisionTree, RandomForest, HistGradientBoosting, SupportVectorMachine, Linear,
                                PaddleMLP)}

__all__ = ["FAMILIES", "PaddleMLP", "TabularFamily", "TabularModel", "preprocessor"]
