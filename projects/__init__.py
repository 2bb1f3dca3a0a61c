"""Department data in, tracked models out.

Public face::

    from projects import get_use_case, load_dataset, train
    uc = get_use_case("service_requests")
    ds = load_dataset(uc, sources=uc.generate_sources(folder, n=2000, seed=1))
    result = train(uc, ds, "svm", {"C": 3.0})

The use-case registry (``get_use_case``, ``list_use_cases``, ...) is defined here; the data and training
names are imported from their modules when first used (:func:`civicml.lazy.lazy_face`), so that
``civicml models list`` names the use cases without loading pandas' frames or scikit-learn.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from civicml.errors import NotFound
from civicml.lazy import lazy_face

if TYPE_CHECKING:
    from projects.base import (Dataset, FittedModel, HistoryReporter, ModelFamily, NullReporter, Pruned, Reporter,
                               UseCase, fingerprint)
    from projects.training import TrainingResult, TrainOptions, train

__getattr__, __dir__ = lazy_face(__name__, {
    "projects.base": ("Dataset", "FittedModel", "HistoryReporter", "ModelFamily", "NullReporter", "Pruned",
                      "Reporter", "UseCase", "fingerprint"),
    "projects.training": ("TrainingResult", "TrainOptions", "train"),
})

# name -> "module:Class"; imported only when asked for, so that Paddle loads only for Paddle use cases.
_USE_CASES = {
    "service_requests": "projects.service_requests:ServiceRequests",
    "street_scenes": "projects.street_scenes:StreetScenes",
    "traffic_flow": "projects.traffic_flow:TrafficFlow",
}
ENTRY_POINT_GROUP = "civicml.use_cases"
SPEC_NAMES = ("usecase.yaml", "usecase.yml")


def _entry_points() -> dict:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def list_use_cases() -> list[str]:
    """Built-in use cases and those that installed packages declare (entry point group ``civicml.use_cases``)."""
    return sorted(set(_USE_CASES) | set(_entry_points()))


def describe_use_cases() -> list[dict]:
    """Name, kind (built-in or plugin) and origin of every use case ``get_use_case`` finds by name."""
    out = [{"name": n, "kind": "built-in", "origin": t} for n, t in _USE_CASES.items()]
    out += [{"name": n, "kind": "plugin", "origin": f"{ep.value} ({ep.dist.name if ep.dist else 'unknown'})"}
            for n, ep in _entry_points().items() if n not in _USE_CASES]
    return sorted(out, key=lambda d: d["name"])


def _looks_like_path(name: str) -> bool:
    return name.endswith((".yaml", ".yml")) or "/" in name or "\\" in name or Path(name).is_dir()


def get_use_case(name: str | Path) -> UseCase:
    """A use case by built-in name, by a path to a use-case YAML (or its folder), or by an installed plugin.

    A name that none of those knows is looked for as ``NAME/usecase.yaml`` under the current folder.
    """
    name = str(name)
    if name in _USE_CASES:
        module, cls = _USE_CASES[name].split(":")
        return getattr(importlib.import_module(module), cls)()
    plugins = _entry_points()
    if name in plugins:
        return _from_plugin(name, plugins[name])
    if _looks_like_path(name):
        return _from_file(Path(name))
    for candidate in (Path(name) / SPEC_NAMES[0], Path(name) / SPEC_NAMES[1]):
        if candidate.exists():
            return _from_file(candidate)
    import difflib

    known = list_use_cases()
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise NotFound(f"unknown use case '{name}'{hint} (known: {', '.join(known)}; or give a path to a "
                   f"use-case YAML)")


def _from_file(path: Path) -> UseCase:
    from projects.tabular import TabularUseCase

    if path.is_dir():
        found = [path / n for n in SPEC_NAMES if (path / n).exists()]
        if not found:
            raise NotFound(f"no use-case file in {path} (expected {SPEC_NAMES[0]})")
        path = found[0]
    return TabularUseCase.from_file(path)


def _from_plugin(name: str, ep) -> UseCase:
    from projects.base import UseCase

    try:
        target = ep.load()
    except Exception as err:  # noqa: BLE001 - a broken plugin is the plugin's error, said in one line
        raise NotFound(f"use case '{name}': its plugin {ep.value} does not load ({type(err).__name__}: {err})") \
            from None
    use_case = target() if callable(target) and not isinstance(target, UseCase) else target
    if not isinstance(use_case, UseCase):
        raise NotFound(f"use case '{name}': plugin {ep.value} gave {type(use_case).__name__}, not a UseCase")
    return use_case


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
    "TrainingResult", "TrainOptions", "UseCase",
    "describe_use_cases", "fingerprint", "get_use_case", "list_use_cases", "load_dataset", "train",
]
