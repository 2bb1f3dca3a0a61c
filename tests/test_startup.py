"""The light commands (neither training nor serving) start without loading the libraries they do not use.

Each command runs as ``app.cli.main`` in a fresh interpreter, from an empty folder, with a new home;
the test reads which modules the process imported (``sys.modules`` at the end), never how long it took.

* ``--help``, a usage error, ``whoami`` and ``token`` import no MLflow, and no pandas, NumPy, scikit-learn,
  Optuna, Paddle, PyTorch or web stack at all;
* the commands that read the registry (``models list|show|lineage``, ``audit``, ``alias``) need MLflow,
  but none of the training, tuning or serving stacks. (MLflow itself imports pandas and FastAPI when it is
  imported, so those two are not checked there; uvicorn and CivicML's own ``serving`` are.)

Before the change every command imported MLflow first, and the parser imported ``tuning`` and with it
Optuna, the training code and scikit-learn.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, sys
from app.cli import main
out, args = sys.argv[1], sys.argv[2:]
try:
    code = main(args)
except SystemExit as exit:
    code = exit.code
with open(out, "w") as handle:
    json.dump({"code": code, "modules": sorted(sys.modules)}, handle)
"""

NO_LIBRARIES = {"mlflow", "pandas", "numpy", "scipy", "sklearn", "optuna", "paddle", "torch", "fastapi",
                "starlette", "uvicorn", "sqlalchemy", "serving", "projects.training", "tuning.study"}
NO_TRAINING_OR_SERVING = {"sklearn", "optuna", "paddle", "torch", "uvicorn", "onnxruntime", "serving",
                          "projects.training", "tuning.study"}

WITHOUT_MLFLOW = [
    (["--help"], 0),
    (["models"], 2),  # a usage error: no subcommand
    (["tune", "--n-trials", "many"], 2),
    (["whoami"], 0),
    (["whoami", "--home", "{home}"], 0),
    (["token", "ana", "--role", "data_scientist", "--expires", "2027-06-30"], 0),
]
REGISTRY_READERS = [
    (["models", "list"], 0),
    (["models", "list", "--home", "{home}"], 0),
    (["models", "show", "service-requests-router"], 2),  # nothing registered in a new home
    (["models", "lineage", "service-requests-router", "1"], 2),
    (["audit", "service-requests-router"], 2),
    (["alias", "service-requests-router", "challenger", "1"], 2),
]


def _run(tmp_path: Path, argv: list[str]) -> tuple[int, set[str]]:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CIVICML_", "MLFLOW_"))}
    env["CIVICML_HOME"] = str(home)
    out = tmp_path / "probe.json"
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run([sys.executable, "-c", PROBE, str(out), *(a.format(home=home) for a in argv)],
                          cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and out.exists(), done.stderr
    result = json.loads(out.read_text())
    return result["code"], set(result["modules"])


def _loaded(modules: set[str], names: set[str]) -> list[str]:
    """Which of ``names`` (packages or modules) are among the imported ``modules``."""
    return sorted(n for n in names if n in modules or any(m.startswith(n + ".") for m in modules))


@pytest.mark.parametrize("argv, code", WITHOUT_MLFLOW, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_help_usage_errors_whoami_and_token_import_no_library(tmp_path, argv, code):
    got, modules = _run(tmp_path, argv)
    assert got == code
    assert _loaded(modules, NO_LIBRARIES) == []


@pytest.mark.parametrize("argv, code", REGISTRY_READERS, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_registry_readers_import_no_training_tuning_or_serving(tmp_path, argv, code):
    got, modules = _run(tmp_path, argv)
    assert got == code
    assert "mlflow" in modules  # they do read the registry through MLflow
    assert _loaded(modules, NO_TRAINING_OR_SERVING) == []
    if argv[:2] == ["models", "list"]:
        assert not (tmp_path / "home").exists()  # a home with no store: nothing to list, nothing created


def _declared(package: str) -> dict[str, str]:
    """name -> module of the names a lazy face imports under ``if TYPE_CHECKING:`` (read from its syntax)."""
    tree = ast.parse((ROOT / package / "__init__.py").read_text())
    found = {}
    for node in tree.body:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for imp in node.body:
                if isinstance(imp, ast.ImportFrom):
                    found.update({alias.asname or alias.name: imp.module for alias in imp.names})
    return found


@pytest.mark.parametrize("package", ["projects", "registry", "tuning"])
def test_every_public_name_of_a_lazy_face_resolves_to_its_module(package):
    face = importlib.import_module(package)
    declared = _declared(package)
    assert declared and set(declared) <= set(face.__all__)
    for name in face.__all__:
        value = getattr(face, name)
        if name in declared:
            assert value is getattr(importlib.import_module(declared[name]), name), name
    assert set(face.__all__) <= set(dir(face))
    with pytest.raises(AttributeError):
        getattr(face, "no_such_name")
