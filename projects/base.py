"""The nouns of ``projects``: a :class:`UseCase`, its :class:`Dataset`, its model families.

A use case is one city problem. It knows how to make or read its department
sources, integrate them into one cleaned and masked frame, and which model
families can learn from that frame. Training (``projects.training``) and tuning
(``tuning``) only talk to these small interfaces.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol

import numpy as np
import pandas as pd

from civicml.fingerprint import frame_fingerprint
from projects.space import SearchSpace


class Pruned(Exception):
    """Raised by a :class:`Reporter` to stop a training that will not be worth finishing."""

    def __init__(self, step: int, value: float):
        super().__init__(f"pruned at step {step} (value {value:.4g})")
        self.step = step
        self.value = value


class Reporter(Protocol):
    """Receives intermediate validation values while a model trains.

    ``report`` may raise :class:`Pruned`; training code lets it propagate. Steps
    are epochs for neural nets, boosting stages or cross-validation folds for
    scikit-learn models.
    """

    def report(self, step: int, value: float) -> None: ...


class NullReporter:
    def report(self, step: int, value: float) -> None:
        return None


class HistoryReporter:
    """Keeps every reported ``(step, value)`` in ``values``: to look at a training's curve in a notebook."""

    def __init__(self):
        self.values: list[tuple[int, float]] = []

    def report(self, step: int, value: float) -> None:
        self.values.append((step, value))


fingerprint = frame_fingerprint  # SHA-256 of a frame's content and schema


def observed_ranges(X: Any) -> dict[str, list[float]]:
    """[min, max] of each numeric (not boolean) column of a feature frame; nothing for other inputs."""
    if not isinstance(X, pd.DataFrame):
        return {}
    out = {}
    for column in X.columns:
        s = X[column]
        if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s) and s.notna().any():
            out[str(column)] = [float(s.min()), float(s.max())]
    return out


@dataclass(frozen=True)
class Dataset:
    """An integrated, cleaned, masked frame, with where it came from."""

    use_case: str
    frame: pd.DataFrame
    target: str
    features: tuple[str, ...]
    sources: tuple[str, ...] = ()
    fingerprint: str = ""
    report: Mapping[str, Any] = field(default_factory=dict)  # what cleaning dropped or fixed

    @classmethod
    def build(cls, use_case: str, frame: pd.DataFrame, target: str, features, sources=(), report=None):
        frame = frame.reset_index(drop=True)
        return cls(use_case, frame, target, tuple(features), tuple(str(s) for s in sources),
                   fingerprint(frame[list(features) + [target]]), dict(report or {}))

    @property
    def X(self) -> pd.DataFrame:
        return self.frame[list(self.features)]

    @property
    def y(self) -> pd.Series:
        return self.frame[self.target]

    def __len__(self) -> int:
        return len(self.frame)

    def subset(self, index) -> "Dataset":
        part = self.frame.iloc[index]
        return Dataset.build(self.use_case, part, self.target, self.features, self.sources, self.report)


class FittedModel(abc.ABC):
    """A trained model: it predicts, and it can log itself as an MLflow model."""

    @abc.abstractmethod
    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Predicted labels (classification) or values (regression) for the rows of ``X``."""

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray | None:
        return None

    @abc.abstractmethod
    def log_model(self, name: str, input_example: pd.DataFrame, metadata: dict) -> str:
        """Log to the active MLflow run; return the logged model's URI."""

    def size_bytes(self) -> int | None:
        return None


class ModelFamily(abc.ABC):
    """A kind of model a use case can train, with its declared search space."""

    name: str
    space: SearchSpace = {}
    defaults: Mapping[str, Any] = {}

    def check_params(self, params: Mapping[str, Any] | None) -> dict[str, Any]:
        """Its defaults with ``params`` on top, every value checked against the declared space
        (:func:`projects.space.check_params`); raises :class:`~civicml.errors.InvalidInput`."""
        from projects.space import check_params

        return check_params(self.name, self.space, self.defaults, params or {})

    @abc.abstractmethod
    def fit(self, train: Dataset, valid: Dataset, params: Mapping[str, Any], reporter: Reporter) -> FittedModel:
        """Fit on ``train``; report intermediate values on ``valid`` through ``reporter``."""


class UseCase(abc.ABC):
    """One city problem, from department files to model families."""

    name: str
    task: str  # "classification" or "regression"
    metric: str  # the primary metric, e.g. "macro_f1" or "mae"
    direction: str  # "maximize" or "minimize"
    registered_model: str  # name in the model registry
    description: str = ""

    @property
    @abc.abstractmethod
    def families(self) -> Mapping[str, ModelFamily]:
        """Model families by name."""

    @abc.abstractmethod
    def generate_sources(self, folder: Path, n: int, seed: int) -> list[Path]:
        """Write synthetic department sources into ``folder``; return their paths."""

    @abc.abstractmethod
    def integrate(self, sources: list[Path]) -> Dataset:
        """Read, standardize, clean and mask ``sources`` into one :class:`Dataset`."""

    def family(self, name: str) -> ModelFamily:
        from civicml.errors import NotFound

        try:
            return self.families[name]
        except KeyError:
            raise NotFound(f"use case '{self.name}' has no model family '{name}' "
                           f"(known: {', '.join(sorted(self.families))})") from None

    def split(self, dataset: Dataset, seed: int = 0, valid_fraction: float = 0.25) -> tuple[Dataset, Dataset]:
        """Train/validation split; stratified for classification."""
        from sklearn.model_selection import train_test_split

        stratify = dataset.y if self.task == "classification" else None
        train_idx, valid_idx = train_test_split(np.arange(len(dataset)), test_size=valid_fraction,
                                                random_state=seed, stratify=stratify)
        return dataset.subset(np.sort(train_idx)), dataset.subset(np.sort(valid_idx))

    def holdout(self, folder: Path, seed: int = 10_000, n: int | None = None) -> Dataset:
        """The held-out set that promotion gates re-evaluate on: fresh sources, another seed."""
        paths = self.generate_sources(Path(folder), n=n or self.default_size // 2, seed=seed)
        return self.integrate(paths)

    default_size: int = 3000
    policy_file: Path | None = None  # the promotion policy of its registered model (YAML, versioned here)

    def logged_metrics(self) -> tuple[str, ...]:
        """The final metrics a training of this use case logs (``fnmatch`` patterns: ``recall_*`` is one per
        class): what tuning may optimise."""
        task = {"classification": ("accuracy", "macro_f1", "recall_*"), "regression": ("mae", "rmse", "mape")}
        return (*task.get(self.task, ()), "fit_seconds", "model_size_bytes")

    def category_values(self, dataset: Dataset) -> dict[str, list]:
        """Allowed values of the categorical features, logged with the model for input checks."""
        return {}

    def input_checks(self, dataset: Dataset) -> dict[str, Any]:
        """More of what serving checks inputs against, logged with the model (its metadata): each numeric
        feature's range in the training data (``observed_ranges``) and what serving does with a value outside
        it (``out_of_range``: ``warn`` answers with a warning, ``refuse`` answers 400)."""
        return {"observed_ranges": observed_ranges(dataset.X), "out_of_range": "warn"}
