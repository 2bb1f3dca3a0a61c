"""scikit-learn model families for 311 routing: a decision tree, an SVM, logistic
regression on text features and gradient boosting.

Every family is one scikit-learn ``Pipeline`` whose first step turns the feature
columns (description, district, channel, hour, weekday) into a matrix, so the
logged model takes those columns as they are and needs no CivicML code to load.
Each searches ``class_weight`` (None or ``balanced``: a rare department counts as much
as a common one) and records the trivial baseline of its training labels.
"""

from __future__ import annotations

from typing import Any, Mapping

from sklearn.compose import ColumnTransformer
from sklearn.decomposition import TruncatedSVD
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from projects.base import Dataset, FittedModel, ModelFamily, Reporter
from projects.metrics import baseline_facts
from projects.sklearn_model import SklearnModel
from projects.space import Categorical, Float, Int

CATEGORICAL = ["district", "channel", "hour", "weekday"]
CLASS_WEIGHT = Categorical([None, "balanced"])


def _features(params: Mapping[str, Any]) -> ColumnTransformer:
    parts = [
        ("words", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1,
                                  max_features=int(params.get("max_features", 20000))), "description"),
        ("onehot", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
    ]
    if params.get("char_ngrams", True):
        parts.insert(1, ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True,
                                                  min_df=2, max_features=30000), "description"))
    return ColumnTransformer(parts)


def _macro_f1(model, valid: Dataset) -> float:
    return float(f1_score(valid.y, model.predict(valid.X), average="macro"))


class _SinglePass(ModelFamily):
    """A family fitted in one call: it reports its validation score once, at step 0."""

    def estimator(self, params: Mapping[str, Any]):
        raise NotImplementedError

    def fit(self, train: Dataset, valid: Dataset, params: Mapping[str, Any], reporter: Reporter) -> FittedModel:
        pipeline = Pipeline([("features", _features(params)), ("model", self.estimator(params))])
        pipeline.fit(train.X, train.y)
        reporter.report(0, _macro_f1(pipeline, valid))
        return SklearnModel(pipeline, baseline_facts("classification", train.y))


class DecisionTree(_SinglePass):
    name = "decision_tree"
    space = {"max_depth": Int(4, 60, log=True), "min_samples_leaf": Int(1, 20, log=True),
             "criterion": Categorical(["gini", "entropy"]), "char_ngrams": Categorical([True, False]),
             "class_weight": CLASS_WEIGHT}
    defaults = {"max_depth": 30, "min_samples_leaf": 2, "criterion": "gini", "char_ngrams": False,
                "class_weight": None}

    def estimator(self, params):
        return DecisionTreeClassifier(max_depth=int(params["max_depth"]), criterion=params["criterion"],
                                      min_samples_leaf=int(params["min_samples_leaf"]),
                                      class_weight=params.get("class_weight"), random_state=0)


class SupportVectorMachine(_SinglePass):
    name = "svm"
    space = {"C": Float(0.05, 50.0, log=True), "kernel": Categorical(["linear", "rbf"]),
             "char_ngrams": Categorical([True, False]), "class_weight": CLASS_WEIGHT}
    defaults = {"C": 1.0, "kernel": "linear", "char_ngrams": True, "class_weight": None}

    def estimator(self, params):
        return SVC(C=float(params["C"]), kernel=params["kernel"], gamma="scale",
                   class_weight=params.get("class_weight"), random_state=0)


class LogisticText(_SinglePass):
    name = "logreg"
    space = {"C": Float(0.1, 100.0, log=True), "char_ngrams": Categorical([True, False]),
             "class_weight": CLASS_WEIGHT}
    defaults = {"C": 10.0, "char_ngrams": True, "class_weight": None}

    def estimator(self, params):
        return LogisticRegression(C=float(params["C"]), class_weight=params.get("class_weight"), max_iter=2000)


class GradientBoosting(ModelFamily):
    """Histogram gradient boosting on an SVD of the text features; reports every ``stage`` trees."""

    name = "boosting"
    space = {"learning_rate": Float(0.03, 0.5, log=True), "max_iter": Int(20, 200, step=20),
             "max_leaf_nodes": Int(8, 64, log=True), "components": Int(32, 160, step=32),
             "class_weight": CLASS_WEIGHT}
    defaults = {"learning_rate": 0.15, "max_iter": 100, "max_leaf_nodes": 31, "components": 96, "char_ngrams": False,
                "class_weight": None}
    stage = 20

    def fit(self, train, valid, params, reporter):
        features = Pipeline([("features", _features(params)),
                             ("svd", TruncatedSVD(n_components=int(params["components"]), random_state=0))])
        Xt = features.fit_transform(train.X, train.y)
        Xv = features.transform(valid.X)
        model = HistGradientBoostingClassifier(learning_rate=float(params["learning_rate"]), warm_start=True,
                                               max_leaf_nodes=int(params["max_leaf_nodes"]),
                                               class_weight=params.get("class_weight"),
                                               early_stopping=False, random_state=0)
        for step, iters in enumerate(range(self.stage, int(params["max_iter"]) + 1, self.stage)):
            model.set_params(max_iter=iters)
            model.fit(Xt, train.y)
            reporter.report(step, float(f1_score(valid.y, model.predict(Xv), average="macro")))
        return SklearnModel(Pipeline(features.steps + [("model", model)]), baseline_facts("classification", train.y))


SKLEARN_FAMILIES = {f.name: f for f in (DecisionTree(), SupportVectorMachine(), LogisticText(), GradientBoosting())}
