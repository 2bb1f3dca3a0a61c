"""Data flows one way: serving never loads training or tuning code; only registry calls the registry API."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REGISTRY_API = re.compile(r"\b(create_registered_model|create_model_version|set_registered_model_alias|"
                          r"get_model_version_by_alias|delete_registered_model_alias|register_model|"
                          r"search_model_versions|set_registered_model_tag)\(")


def test_serving_loads_no_training_or_tuning_code():
    code = ("import sys, serving; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('projects', 'tuning')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_only_registry_calls_the_registry_api():
    offenders = []
    for package in ("projects", "tuning", "serving", "civicml"):
        for path in (ROOT / package).rglob("*.py"):
            if REGISTRY_API.search(path.read_text()):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
