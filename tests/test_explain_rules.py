"""Rules and global views logged at registration: readable, faithful to the model, and complete."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from registry.rules import fit_surrogate
from civicml.tags import TAG_INSIGHTS, TAG_RULES_FIDELITY

pytest_plugins = ["explained_model"]  # one session fixture for every module that uses it


@pytest.fixture(scope="module")
def insights(explained_model, tmp_path_factory):
    from registry import ModelStore

    store = ModelStore(explained_model.settings)  # its own client: CivicML sets no process-wide MLflow URI
    version = store.get_version(explained_model.name, explained_model.version.version)
    folder = str(store.download(version.tags[TAG_INSIGHTS], tmp_path_factory.mktemp("i")))
    return version, folder


def test_rules_agree_with_the_311_model_on_unseen_held_out_rows(insights):
    version, folder = insights
    fidelity = float(version.tags[TAG_RULES_FIDELITY])
    assert fidelity >= 0.9
    rules = json.loads(open(f"{folder}/rules.json").read())
    assert rules["fidelity"] == pytest.approx(fidelity, abs=1e-4) and rules["rows_checked"] >= 150
    assert rules["max_depth"] <= 5 and 6 <= len(rules["rules"]) <= 16
    text = open(f"{folder}/rules.md").read()
    assert "THEN 'roads'" in text and re.search(r"description has (no )?\w+ words", text) and "- **description: " in text and f"{fidelity:.3f}" in text


def test_global_views_are_logged_as_pictures_and_data(insights):
    _, folder = insights
    summary = json.loads(open(f"{folder}/summary.json").read())
    for name in ("importance", "predictions", "predicted_vs_actual", "calibration", "by_district", "map"):
        assert f"{name}.png" in summary["files"]
        with open(f"{folder}/{name}.png", "rb") as png:
            assert png.read(8) == b"\x89PNG\r\n\x1a\n"
    by_district = json.loads(open(f"{folder}/by_district.json").read())
    assert len(by_district["values"]) == 8 and 0 <= by_district["gap"] <= 1
    importance = pd.read_csv(f"{folder}/importance.csv")
    columns = importance[importance.kind == "column"].set_index("feature")["importance"]
    assert columns.idxmax() == "description"  # the text decides the department, not the hour
    confusion = pd.read_csv(f"{folder}/predicted_vs_actual.csv", index_col=0)
    assert confusion.to_numpy().sum() == summary["rows"]
    points = json.loads(open(f"{folder}/map.json").read())["points"]
    assert len(points) == summary["rows"] and any(not p["ok"] for p in points)


def test_rules_for_a_regression_report_r2():
    from sklearn.ensemble import RandomForestRegressor

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"hour": rng.integers(0, 24, 300), "district": rng.choice(["North", "South"], 300)})
    y = frame.hour * 10 + (frame.district == "North") * 50 + rng.normal(0, 3, 300)
    X = np.c_[frame.hour, frame.district == "North"]
    answers = RandomForestRegressor(n_estimators=20, random_state=0).fit(X, y).predict(X)
    surrogate = fit_surrogate(frame, answers)
    assert surrogate.fidelity_measure == "r2" and surrogate.fidelity > 0.9
    assert any("hour <= " in r for r in surrogate.rules) and any("district is North" in r for r in surrogate.rules)


def test_the_card_reports_the_rules_fidelity_and_what_a_weak_one_reached(explained_model):
    from registry import model_card
    from registry.card import render

    card = model_card(explained_model.name, explained_model.version.version, settings=explained_model.settings)
    found = re.search(r"fidelity on the held-out set: (0\.\d{3}) \(agreement on (\d+) held-out rows", card)
    assert found and float(found.group(1)) >= 0.9 and int(found.group(2)) >= 150 and "meets the 0.9 target" in card
    weak = render(name="m", version="1", intended_use="x", facts={}, data=None, evaluation=None, stage="registered",
                  rules={"fidelity": 0.8312, "checked": "R² on 120 held-out rows"})
    assert "0.831 (R² on 120 held-out rows the rules never saw): below the 0.9 target; the rules reached 0.831" in weak
    assert "rough guide" in weak.split("## Limitations")[1]


def test_civicml_register_computes_rules_on_a_held_out_set(explained_model, requests_holdout, tmp_path, capsys):
    from app.cli import main
    from registry import model_card, versions

    home = ["--home", str(explained_model.home)]
    source = explained_model.version.tags["civicml.source"]
    files = [str(f) for f in requests_holdout.sources]
    assert main(["register", source, "--name", "cli-router", "--holdout", *files, *home]) == 0
    assert "rules fidelity 0.9" in capsys.readouterr().out
    assert main(["register", source, "--name", "cli-router", "--no-holdout", *home]) == 0
    with_rules, without = versions("cli-router", settings=explained_model.settings)
    assert float(with_rules.tags[TAG_RULES_FIDELITY]) >= 0.9 and TAG_RULES_FIDELITY not in without.tags
    assert "fidelity on the held-out set" in model_card("cli-router", "1", settings=explained_model.settings)
    missing = tmp_path / "none.csv"
    for argv in (["--holdout", str(missing)], ["--holdout", files[0], "--no-holdout"]):
        assert main(["register", source, "--name", "cli-router", *argv, *home]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert len(versions("cli-router", settings=explained_model.settings)) == 2  # a failed command stored nothing
