"""Department data in, tracked models out.

Public face::

    from projects import get_use_case, load_dataset, train
    uc = get_use_case("service_requests")
    ds = load_dataset(uc, sources=uc.generate_sources(folder, n=2000, seed=1))
    result = train(uc, ds, "svm", {"C": 3.0})
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Iterable

from civicml.errors import NotFound
from projects.base import (Dataset, FittedModel, HistoryReporter, ModelFamily, NullReporter, Pruned, Reporter,
                           UseCase, fingerprint)
from projects.training import TrainingResult, train

# name -> "module:Class"; imported only when asked for, so that Paddle loads only for Paddle use cases.
_USE_CASES = {
    "service_requests": "projects.service_requests:ServiceRequests",
    "street_scenes": "projects.street_scenes:StreetScenes",
    "traffic_flow": "projects.traffic_flow:TrafficFlow",
}


def list_use_cases() -> list[str]:
    return sorted(_USE_CASES)


def get_use_case(name: str) -> UseCase:
    try:
        target = _USE_CASES[name]
    except KeyError:
        raise NotFound(f"unknown use case '{name}' (known: {', '.join(list_use_cases())})") from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)()


def load_dataset(use_case: UseCase | str, sources: Iterable[str | Path]) -> Dataset:
    """Integrate a use case's department files (generated or a user's own) into a Dataset."""
    if isinstance(use_case, str):
        use_case = get_use_case(use_case)
    paths = [Path(p) for p in sources]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise NotFound(f"source file not found: {missing[0]}")
    return use_case.integrate(paths)


__all__ = [
    "Dataset", "FittedModel", "HistoryReporter", "ModelFamily", "NullReporter", "Pruned", "Reporter",
    "TrainingResult", "UseCase",
    "fingerprint", "get_use_case", "list_use_cases", "load_dataset", "train",
]
