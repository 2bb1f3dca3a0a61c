"""A use case written as code and installed as a package (entry point group ``civicml.use_cases``).

The test makes a real installed distribution in a temporary folder (a package and
its ``*.dist-info`` with ``entry_points.txt``) and puts it on the path, as pip would.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from app.cli import main

PLUGIN = '''
"""Permit applications approved or not: a team's own use case, in code."""
from pathlib import Path

import numpy as np
import pandas as pd

from projects import Dataset, UseCase
from projects.tabular.families import DecisionTree, Linear

TYPES = {"kind": "category", "area_m2": "numeric", "storeys": "numeric", "ward": "category"}


class Permits(UseCase):
    name = "permits"
    task = "classification"
    metric = "macro_f1"
    direction = "maximize"
    registered_model = "permit-approvals"
    description = "Predict whether a building permit application is approved."
    default_size = 400
    policy_file = Path(__file__).parent / "policy.yaml"

    @property
    def families(self):
        return {"decision_tree": DecisionTree(self.task, TYPES, self.metric),
                "linear": Linear(self.task, TYPES, self.metric)}

    def generate_sources(self, folder, n, seed):
        rng = np.random.default_rng(seed)
        kind = rng.choice(["deck", "garage", "addition", "demolition"], n)
        area = rng.gamma(2.0, 40.0, n).round(1)
        storeys = rng.integers(1, 4, n)
        approved = (kind != "demolition") & (area < 120) | (rng.random(n) < 0.1)
        frame = pd.DataFrame({"kind": kind, "area_m2": area, "storeys": storeys.astype(float),
                              "ward": rng.choice(["w1", "w2", "w3"], n),
                              "approved": np.where(approved, "yes", "no")})
        Path(folder).mkdir(parents=True, exist_ok=True)
        path = Path(folder) / f"permits-{seed}.csv"
        frame.to_csv(path, index=False)
        return [path]

    def integrate(self, sources):
        frame = pd.concat([pd.read_csv(p) for p in sources], ignore_index=True)
        frame[["kind", "ward"]] = frame[["kind", "ward"]].astype(str)
        return Dataset.build(self.name, frame, "approved", list(TYPES), sources, {"rows": len(frame)})
'''
POLICY = "version: 1\nmodel: permit-approvals\nmetric: macro_f1\nmin_value: 0.6\nmax_regression: 0.0\n"


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch) -> Path:
    site = tmp_path / "site-packages"
    package = site / "civic_permits"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    (package / "policy.yaml").write_text(POLICY)
    info = site / "civic_permits-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: civic-permits\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[civicml.use_cases]\npermits = civic_permits:Permits\n")
    (info / "RECORD").write_text("")
    monkeypatch.syspath_prepend(str(site))
    yield site


@pytest.mark.slow
def test_an_installed_plugin_is_listed_tuned_and_promoted_with_the_normal_cli(installed_plugin, tmp_path, capsys):
    from projects import get_use_case, list_use_cases

    assert "permits" in list_use_cases()
    assert main(["use-cases"]) == 0
    out = capsys.readouterr().out
    assert "permits" in out and "plugin" in out and "civic-permits" in out
    assert get_use_case("permits").registered_model == "permit-approvals"
    home = str(tmp_path / "home")
    assert main(["tune", "--use-case", "permits", "--n-trials", "2", "--rows", "400", "--home", home]) == 0
    assert "registered permit-approvals version 1" in capsys.readouterr().out
    assert main(["promote", "permit-approvals", "--home", home]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "PASS macro_f1 >= 0.6" in out and "promoted permit-approvals version 1" in out
    assert main(["rollback", "permit-approvals", "--home", home]) == 2  # nothing before it: one line, exit 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["models", "list", "--home", home]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("permit-approvals  ") and "champion=v1" in line for line in lines)
    assert any(line.split()[:2] == ["permits", "plugin"] and "civic-permits" in line for line in lines)


def test_a_broken_plugin_is_one_line(tmp_path, monkeypatch, capsys):
    site = tmp_path / "site"
    info = site / "broken-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[civicml.use_cases]\nbroken = no_such_module:Nothing\n")
    monkeypatch.syspath_prepend(str(site))
    assert main(["train", "--use-case", "broken", "--home", str(tmp_path / "home")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "its plugin no_such_module:Nothing does not load" in err
