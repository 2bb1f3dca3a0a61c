"""A department's own files through the normal CLI: init -> data -> tune -> promote -> serve, real models.

Declared personal data never reaches an artifact or a store: every file under the
home (SQLite stores, artifacts, model files) is searched for the raw values.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from app.cli import main
from civicml.settings import Settings
from tabular_exports import HOURLY_YAML, INSPECTIONS_YAML, hourly_counts, inspections


def _ok(argv, capsys) -> str:
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def _serve_and_predict(name: str, home: Path, rows: list[dict]) -> dict:
    from serving import BackgroundServer, Endpoint, EndpointClient

    endpoint = Endpoint(name, settings=Settings.from_env(env={}, home=home), refresh_seconds=0)
    with BackgroundServer(endpoint) as server, EndpointClient(server.url) as client:
        return client.predict(rows)


@pytest.fixture(scope="module")
def inspections_lifecycle(tmp_path_factory):
    """Two department files joined on the site and a date, free text and categories; tuned, promoted."""
    root = tmp_path_factory.mktemp("inspections")
    inspections(root / "exports", n=500, seed=2)
    return root


def test_inspections_from_files_to_a_served_champion(inspections_lifecycle, capsys, monkeypatch):
    root = inspections_lifecycle
    monkeypatch.chdir(root)
    home = root / "home"
    out = _ok(["init", "inspections", "--data", "exports/inspections.csv", "--target", "violation"], capsys)
    assert "'inspector' looks like people's names" in out
    # the data scientist's edit: the complaints export joined on site and date, hashing the e-mails
    spec = yaml.safe_load(INSPECTIONS_YAML.format(name="inspections", families="decision_tree, linear"))
    spec["sources"][0]["path"] = "../exports/inspections.csv"
    spec["sources"][1]["path"] = "../exports/complaints.csv"
    spec["privacy"] = {"drop": ["inspector"], "hash": ["complainant_email"], "mask": ["notes"]}
    path = root / "inspections" / "usecase.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    out = _ok(["data", "--use-case", str(path), "--home", str(home)], capsys)
    assert "matched" in out and "hashed ['complainant_email']" in out
    out = _ok(["tune", "--use-case", str(path), "--n-trials", "3", "--home", str(home), "--json"], capsys)
    assert '"registered": {"name": "inspections"' in out
    out = _ok(["promote", "inspections", "--home", str(home)], capsys)
    assert "promoted inspections version 1 to 'champion'" in out
    answer = _serve_and_predict("inspections", home, [
        {"site_id": 1001, "inspected_at": "2025-12-01T10:00:00", "risk_code": "high", "cuisine": "thai",
         "notes": "rodent droppings found near storage", "complaints_30d": 4, "complaint_type": "pests"},
        {"site_id": 1002, "inspected_at": "2025-12-01", "risk_code": "low", "cuisine": "a new cuisine",
         "notes": "kitchen clean", "complaints_30d": 0, "complaint_type": "never seen"}])  # unknown categories
    assert answer["model"]["version"] == "1"
    # classifiers answer one stable shape: {"label": ..., "p_<class>": ...} per row
    assert {p["label"] for p in answer["predictions"]} <= {"yes", "no"} and len(answer["predictions"]) == 2
    assert all(abs(p["p_yes"] + p["p_no"] - 1) < 1e-6 for p in answer["predictions"])
    # the use-case file is logged with the model's run
    import mlflow

    from civicml.tracking import configure

    configure(Settings.from_env(env={}, home=home))
    version = mlflow.MlflowClient().get_model_version("inspections", "1")
    assert version.tags["civicml.use_case"] == str(path)
    logged = mlflow.artifacts.load_dict(f"runs:/{version.run_id}/data/dataset.json")
    assert logged["cleaning"]["use_case_file"]["text"] == path.read_text()
    # the audit trail and the card work as for any model
    out = _ok(["audit", "inspections", "--home", str(home)], capsys)
    assert "promote" in out
    # the hashing secret and the inline policy are kept under --home, nowhere else
    assert (home / "secrets" / "hash-salt").exists() and list((home / "policies").glob("inspections-*.yaml"))
    assert not (root / "civicml-home").exists()


def test_declared_personal_data_never_reaches_an_artifact_or_a_store(inspections_lifecycle):
    root = inspections_lifecycle
    home = root / "home"
    if not (home / "mlflow.db").exists():
        pytest.skip("needs the lifecycle test's home")
    raw = pd.read_csv(root / "exports" / "inspections.csv")
    complaints = pd.read_csv(root / "exports" / "complaints.csv")
    secrets = set(raw["inspector"]) | set(complaints["complainant_email"])
    secrets |= {m for text in raw["notes"] for m in re.findall(r"555-\d{3}-\d{4}", text)}
    assert len(secrets) > 50
    pattern = re.compile(b"|".join(re.escape(s.encode()) for s in sorted(secrets, key=len, reverse=True)))
    assert pattern.search((root / "exports" / "complaints.csv").read_bytes())  # the search does find them
    searched = 0
    for path in home.rglob("*"):
        if path.is_file():
            searched += 1
            found = pattern.search(path.read_bytes())
            assert found is None, f"{path.relative_to(home)} holds a raw personal value"
    assert searched > 10 and (home / "mlflow.db").exists()


@pytest.mark.slow
def test_a_paddle_mlp_is_tuned_promoted_and_served_from_raw_rows(inspections_lifecycle, capsys, monkeypatch):
    root = inspections_lifecycle
    home = root / "home-mlp"
    path = root / "exports" / "mlp.yaml"
    path.write_text(INSPECTIONS_YAML.format(name="inspections_mlp", families="paddle_mlp"))
    _ok(["tune", "--use-case", str(path), "--n-trials", "2", "--home", str(home),
         "--set", "paddle_mlp.hidden=32,64"], capsys)
    out = _ok(["promote", "inspections-mlp", "--home", str(home)], capsys)
    assert "promoted inspections-mlp version 1 to 'champion'" in out
    answer = _serve_and_predict("inspections-mlp", home, [
        {"site_id": 1001, "inspected_at": "2025-12-01T10:00:00", "risk_code": "high", "cuisine": "thai",
         "notes": "rodent droppings found near storage", "complaints_30d": 4, "complaint_type": "pests"},
        {"site_id": 1002, "inspected_at": "2025-12-01", "risk_code": "low", "cuisine": "a new cuisine",
         "notes": "kitchen clean", "complaints_30d": None, "complaint_type": "never seen"}])
    rows = answer["predictions"]
    assert len(rows) == 2 and {p["label"] for p in rows} <= {"yes", "no"}
    assert all(abs(p["p_yes"] + p["p_no"] - 1) < 1e-5 for p in rows)
    import mlflow

    from civicml.tracking import configure

    configure(Settings.from_env(env={}, home=home))
    version = mlflow.MlflowClient().get_model_version("inspections-mlp", "1")
    assert mlflow.get_run(version.run_id).data.params["family"] == "paddle_mlp"


@pytest.mark.slow
def test_hourly_counts_regression_from_init_to_serving(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    hourly_counts(tmp_path / "exports", days=30, stations=3, seed=4)
    home = tmp_path / "home"
    out = _ok(["init", "ridership", "--data", "exports/ridership.parquet", "--target", "riders"], capsys)
    path = tmp_path / "ridership" / "usecase.yaml"
    guessed = yaml.safe_load(path.read_text())
    assert guessed["task"] == "regression" and guessed["metric"] == "mae"
    assert guessed["types"]["hour_start"] == "date" and guessed["holdout"]["split"] == "time"
    spec = yaml.safe_load(HOURLY_YAML.format(name="ridership", families="hist_gradient_boosting, linear"))
    spec["sources"][0]["path"] = "../exports/ridership.parquet"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    _ok(["data", "--use-case", str(path), "--home", str(home)], capsys)
    _ok(["tune", "--use-case", str(path), "--n-trials", "3", "--home", str(home)], capsys)
    out = _ok(["promote", "ridership", "--home", str(home)], capsys)
    assert "PASS mae" in out and "promoted ridership version 1" in out
    answer = _serve_and_predict("ridership", home, [
        {"hour_start": "2025-06-02T08:00:00", "station": "ST-02", "temp_c": 18.0},
        {"hour_start": "2025-06-02T03:00:00", "station": "ST-02", "temp_c": 18.0}])
    rush, night = answer["predictions"]
    assert rush > night  # the morning peak is learnt from the hour of the date column


@pytest.mark.slow
def test_mlflow_run_tunes_a_use_case_file(tmp_path):
    import os
    import subprocess
    import sys

    import mlflow

    root = Path(__file__).resolve().parents[1]
    hourly_counts(tmp_path / "data", days=10, stations=2, seed=5)
    path = tmp_path / "data" / "usecase.yaml"
    path.write_text(HOURLY_YAML.format(name="hourly_mlrun", families="linear, hist_gradient_boosting"))
    uri = f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}"
    (tmp_path / "home").mkdir()
    env = {**os.environ, "CIVICML_HOME": str(tmp_path / "home"), "MLFLOW_TRACKING_URI": uri,
           "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [str(Path(sys.executable).parent / "mlflow"), "run", str(root), "-e", "tune", "-P", f"use_case={path}",
           "-P", "n_trials=2", "--env-manager", "local", "--experiment-name", "hourly_mlrun"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    version = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version("hourly-mlrun", "1")
    assert version.tags["civicml.use_case"] == str(path)
