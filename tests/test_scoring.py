"""civicml score: a registered version run over files on a real local Spark.

Two Spark jobs in all (a JVM each): one in-process with CSV input, refused rows and reasons; one through the
command in a fresh process on Parquet input. Bad arguments are refused before Spark starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pyspark")

NAME = "scored-router"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scored_model(tmp_path_factory, small_requests):
    import registry
    from civicml.settings import Settings
    from projects import get_use_case, train

    home = tmp_path_factory.mktemp("scoring") / "home"
    settings = Settings.from_env(env={}, home=home, user="tester")
    result = train(get_use_case("service_requests"), small_requests, "logreg", {"char_ngrams": False},
                   settings=settings)
    version = registry.register(result.model_uri, NAME, settings=settings)
    frame = small_requests.frame[["description", "district", "channel", "hour", "weekday"]].head(60)
    frame = frame.reset_index(drop=True).assign(ticket=[f"T{i:03d}" for i in range(60)])
    return settings, version, frame


def _expected(settings, frame: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """What a served endpoint of the same version answers for ``frame`` (labels, top probability)."""
    from serving import Endpoint

    endpoint = Endpoint(NAME, "challenger", settings=settings, refresh_seconds=0)
    endpoint.load()
    try:
        output, _ = endpoint.predict(frame)
    finally:
        endpoint.close()
    columns = pd.DataFrame({k: list(v) for k, v in output.items()})
    probabilities = columns[[c for c in columns.columns if str(c).startswith("p_")]].to_numpy(dtype=float)
    return columns["label"].astype(str).tolist(), probabilities.max(axis=1)


def test_score_answers_every_row_in_order_and_refuses_bad_rows_with_a_reason(scored_model, tmp_path):
    import registry
    from civicml.tracking import tracking_client
    from serving.scoring import ScoreOptions, score

    settings, _, frame = scored_model
    given = frame.astype(str)
    given.loc[7, "hour"] = "noon"  # not a number
    given.loc[23, "district"] = "Atlantis"  # not a district the model knows
    given.to_csv(tmp_path / "tickets.csv", index=False)
    lines = []
    result = score(NAME, "challenger", [str(tmp_path / "tickets.csv")], str(tmp_path / "scored.parquet"),
                   ScoreOptions(explain=True), settings=settings, progress=lines.append)

    assert (result.rows_in, result.rows_scored, result.rows_rejected, result.version) == (60, 58, 2, "1")
    scored = pd.read_parquet(tmp_path / "scored.parquet")
    kept = [i for i in range(60) if i not in (7, 23)]
    assert scored["ticket"].tolist() == [f"T{i:03d}" for i in kept]  # the input's order and its own columns
    labels, confidence = _expected(settings, frame.iloc[kept].reset_index(drop=True))
    assert scored["answer"].tolist() == labels
    assert np.allclose(scored["confidence"].to_numpy(dtype=float), confidence)
    assert set(scored["version"]) == {"1"} and scored["variant"].isna().all()
    reasons = [json.loads(r) for r in scored["reasons"]]
    assert all(len(r) == 3 and {"feature", "weight"} <= set(r[0]) for r in reasons)

    rejected = pd.read_parquet(result.rejects)
    assert rejected["ticket"].tolist() == ["T007", "T023"]
    assert "hour" in rejected["reason"][0] and "Atlantis" in rejected["reason"][1]
    assert "row 0" not in " ".join(rejected["reason"])

    run = tracking_client(settings).get_run(result.run_id)
    assert run.data.params["version"] == "1" and run.data.metrics["rows_rejected"] == 2
    assert run.data.tags["civicml.scored_input_fingerprint"] == result.input_fingerprint
    entry = [e for e in registry.audit(NAME, settings=settings) if e["action"] == "score"][-1]
    assert entry["run_id"] == result.run_id and entry["rows_scored"] == 58 and entry["who"] == "tester"
    assert any("Spark is scoring" in line for line in lines)
    assert not list(tmp_path.glob(".scored.parquet.*"))  # the staging folder is gone


def test_cli_score_in_a_fresh_process_from_an_empty_folder(scored_model, tmp_path):
    settings, _, frame = scored_model
    work = tmp_path / "empty"
    work.mkdir()
    frame.to_parquet(work / "tickets.parquet")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CIVICML_"))}
    env["HOME"] = str(tmp_path / "fresh-home")
    civicml = Path(sys.executable).with_name("civicml")
    done = subprocess.run([str(civicml), "score", f"{NAME}/1", "--input", "tickets.parquet", "--output", "out.parquet",
                           "--home", str(settings.home), "--json"], cwd=work, capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["rows_scored"] == 60 and summary["rows_rejected"] == 0 and summary["rejects"] is None
    out = pd.read_parquet(work / "out.parquet")
    assert out["ticket"].tolist() == frame["ticket"].tolist()
    assert out["answer"].tolist() == _expected(settings, frame)[0]
    assert "WARN" not in done.stderr and "log4j" not in done.stderr.lower()  # Spark's own lines: the home's log
    assert (settings.home / "logs" / "spark.log").exists()


@pytest.mark.parametrize("args, fragment", [
    (["--input", "missing.csv"], "input 'missing.csv' not found"),
    (["--input", "tickets.txt"], "not a .csv or .parquet file"),
    (["--input", "tickets.csv", "--output", "exists.parquet"], "exists: remove it or name another"),
    (["--input", "tickets.csv", "--output", "out.csv"], "name a .parquet path"),
])
def test_cli_score_refuses_bad_arguments_before_spark_starts(scored_model, tmp_path, monkeypatch, capsys,
                                                             args, fragment):
    from app.cli import main

    settings, _, frame = scored_model
    monkeypatch.chdir(tmp_path)
    frame.head(3).to_csv("tickets.csv", index=False)
    Path("tickets.txt").write_text("x")
    Path("exists.parquet").mkdir()
    argv = ["score", NAME, "--home", str(settings.home), *args]
    if "--output" not in args:
        argv += ["--output", "out.parquet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and len(err.splitlines()) == 1
    assert not Path("out.parquet").exists() and not list(Path(".").glob(".out.parquet.*"))


def test_score_refuses_an_unknown_model_in_one_line(scored_model, tmp_path, capsys):
    from app.cli import main

    settings, _, frame = scored_model
    frame.head(3).to_csv(tmp_path / "t.csv", index=False)
    assert main(["score", "no-such-model", "--home", str(settings.home), "--input", str(tmp_path / "t.csv"),
                 "--output", str(tmp_path / "o.parquet")]) == 2
    assert "no-such-model" in capsys.readouterr().err
    assert not (tmp_path / "o.parquet").exists()


def test_cli_score_with_a_variant_answers_as_the_served_variant(scored_model, requests_holdout, tmp_path, capsys):
    """`--variant onnx` (the kind a word-only logreg converts to exactly): the job answers with the variant's
    own version and runtime, row for row as an endpoint serving that variant (in-process: the JVM is reused)."""
    from app.cli import main
    from registry import VariantPolicy, compress
    from serving import Endpoint

    settings, version, frame = scored_model
    built = compress(NAME, version.version, "onnx", settings, holdout=requests_holdout, repeats={1: 2, 64: 1},
                     policy=VariantPolicy())
    assert built.passed
    rows = frame.head(40)
    rows.to_csv(tmp_path / "tickets.csv", index=False)
    capsys.readouterr()
    assert main(["score", f"{NAME}@challenger", "--variant", "onnx", "--input", str(tmp_path / "tickets.csv"),
                 "--output", str(tmp_path / "scored.parquet"), "--home", str(settings.home), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["variant"] == "onnx" and summary["version"] == built.version.version != version.version
    assert summary["rows_scored"] == 40 and summary["rows_rejected"] == 0
    scored = pd.read_parquet(tmp_path / "scored.parquet")
    assert scored["ticket"].tolist() == rows["ticket"].tolist()
    assert set(scored["variant"]) == {"onnx"} and set(scored["version"]) == {built.version.version}

    endpoint = Endpoint(NAME, "challenger", settings=settings, refresh_seconds=0, variant="onnx")
    try:
        assert endpoint.load().version == built.version.version and endpoint.served.runtime == "onnx"
        output, _ = endpoint.predict(rows.drop(columns=["ticket"]))
    finally:
        endpoint.close()
    served = pd.DataFrame({k: list(v) for k, v in output.items()})
    assert scored["answer"].tolist() == served["label"].astype(str).tolist()
    top = served[[c for c in served.columns if str(c).startswith("p_")]].to_numpy(dtype=float).max(axis=1)
    assert np.allclose(scored["confidence"].to_numpy(dtype=float), top, atol=1e-6)


# -- a department's own use-case file, and the CNN's int8 variant: the same answers as HTTP ----------------
def _http_answers(settings, name: str, ref: str, body: dict, variant: str | None = None) -> pd.DataFrame:
    """What the real HTTP server (in process) answers for ``body``: one row per input, label and p_<class>."""
    from fastapi.testclient import TestClient

    from serving import Endpoint, create_app

    endpoint = Endpoint(name, ref, settings=settings, refresh_seconds=0, variant=variant)
    with TestClient(create_app(endpoint, follow=False)) as client:
        response = client.post("/invocations", json=body)
    assert response.status_code == 200, response.text
    return pd.DataFrame(response.json()["predictions"])


def _top(answers: pd.DataFrame) -> np.ndarray:
    return answers[[c for c in answers.columns if str(c).startswith("p_")]].to_numpy(dtype=float).max(axis=1)


def _lineage(settings, name: str, result) -> None:
    """The job's MLflow run holds its lineage, and the model's audit trail the event."""
    import registry
    from civicml.tracking import tracking_client

    run = tracking_client(settings).get_run(result.run_id)
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["civicml.scored_input_fingerprint"] == result.input_fingerprint
    assert run.data.params["version"] == result.version and run.data.params["variant"] == (result.variant or "-")
    assert (metrics["rows_in"], metrics["rows_scored"], metrics["rows_rejected"]) == (
        result.rows_in, result.rows_scored, result.rows_rejected)
    entry = [e for e in registry.audit(name, settings=settings) if e["action"] == "score"][-1]
    assert entry["run_id"] == result.run_id and entry["rows_rejected"] == result.rows_rejected
    assert entry["input_fingerprint"] == result.input_fingerprint


def test_score_a_use_case_file_model_as_http_answers_it(tmp_path):
    """The bring-your-own-problem path: a use-case YAML over a department's CSV exports, trained and
    registered; its raw rows scored from CSV (every value as text) answer as the HTTP endpoint does."""
    import yaml

    import registry
    from civicml.settings import Settings
    from projects import get_use_case, load_dataset, train
    from serving.scoring import ScoreOptions, score
    from tabular_exports import INSPECTIONS_YAML, inspections

    inspections(tmp_path / "exports", n=300, seed=1)
    spec = yaml.safe_load(INSPECTIONS_YAML.format(name="inspections", families="decision_tree"))
    (tmp_path / "exports" / "usecase.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    use_case = get_use_case(str(tmp_path / "exports" / "usecase.yaml"))
    data = load_dataset(use_case, use_case.generate_sources(None))
    settings = Settings.from_env(env={}, home=tmp_path / "home", user="tester")
    trained = train(use_case, data, "decision_tree", {}, settings=settings)
    registry.register(trained.model_uri, "inspections", settings=settings, tags=use_case.registry_tags)

    rows = data.X.head(40).reset_index(drop=True)
    given = rows.astype(object).assign(inspection=[f"I{i:02d}" for i in range(40)])
    given.loc[5, "complaints_30d"] = "several"  # not a number: refused with its reason, the rest scored
    given.to_csv(tmp_path / "inspections.csv", index=False)
    result = score("inspections", "challenger", [str(tmp_path / "inspections.csv")], str(tmp_path / "out.parquet"),
                   settings=settings)
    assert (result.rows_in, result.rows_scored, result.rows_rejected) == (40, 39, 1)
    scored = pd.read_parquet(tmp_path / "out.parquet")
    kept = [i for i in range(40) if i != 5]
    assert scored["inspection"].tolist() == [f"I{i:02d}" for i in kept]
    body = json.loads(rows.iloc[kept].to_json(orient="split", index=False))  # NaN -> null, as a client sends
    served = _http_answers(settings, "inspections", "challenger", {"dataframe_split": body})
    assert scored["answer"].tolist() == served["label"].astype(str).tolist()
    assert np.allclose(scored["confidence"].to_numpy(dtype=float), _top(served))
    rejected = pd.read_parquet(result.rejects)
    assert rejected["inspection"].tolist() == ["I05"] and "complaints_30d" in rejected["reason"][0]
    _lineage(settings, "inspections", result)


def test_score_the_street_scenes_cnn_int8_variant_from_parquet_images(tmp_path):
    """Images in Parquet (each row a nested [3, 32, 32] list, as Arrow stores an array), answered by the CNN's
    static int8 variant as the HTTP endpoint serving that variant answers; rows that are not an image of
    that shape, or hold NaN, go to the rejects file with the reason."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from civicml.errors import InvalidInput
    from civicml.settings import Settings
    from projects import get_use_case, load_dataset, train
    from projects.street_scenes.model import images_of
    from registry import VariantPolicy, compress, register
    from serving.scoring import ScoreOptions, score

    use_case = get_use_case("street_scenes")
    data = load_dataset(use_case, use_case.generate_sources(tmp_path / "train", n=240, seed=7))
    holdout = load_dataset(use_case, use_case.generate_sources(tmp_path / "holdout", n=60, seed=10_000))
    settings = Settings.from_env(env={}, home=tmp_path / "home", user="tester")
    trained = train(use_case, data, "cnn", {"epochs": 2, "width": 16, "augment": False}, settings=settings, seed=0)
    parent = register(trained.model_uri, "scenes", settings=settings)
    lenient = VariantPolicy.from_dict({"max_quality_loss": 0.5, "min_agreement": 0.5})
    built = compress("scenes", parent.version, "int8", settings, holdout=holdout, policy=lenient, repeats={1: 1, 64: 1})
    assert built.passed, built.reason

    images = images_of(holdout.X.head(24))
    column = [image.tolist() for image in images]
    column[3], column[9] = None, [[[0.5]]]  # no image; an image of the wrong shape
    column[15][1][2][3] = float("nan")
    table = pa.table({"photo_id": [f"P{i:02d}" for i in range(24)], "image": column})
    pq.write_table(table, tmp_path / "photos.parquet")
    result = score("scenes", "challenger", [str(tmp_path / "photos.parquet")], str(tmp_path / "out.parquet"),
                   ScoreOptions(variant="int8"), settings=settings)
    assert (result.rows_in, result.rows_scored, result.rows_rejected) == (24, 21, 3)
    assert result.variant == "int8" and result.version == built.version.version
    scored = pd.read_parquet(tmp_path / "out.parquet")
    kept = [i for i in range(24) if i not in (3, 9, 15)]
    assert scored["photo_id"].tolist() == [f"P{i:02d}" for i in kept]
    served = _http_answers(settings, "scenes", "challenger", {"instances": images[kept].tolist()}, variant="int8")
    assert scored["answer"].tolist() == served["label"].astype(str).tolist()
    assert np.allclose(scored["confidence"].to_numpy(dtype=float), _top(served), atol=1e-6)
    rejected = pd.read_parquet(result.rejects)
    assert rejected["photo_id"].tolist() == ["P03", "P09", "P15"]
    assert "no value" in rejected["reason"][0] and "got 1 numbers" in rejected["reason"][1]
    assert "finite" in rejected["reason"][2]
    _lineage(settings, "scenes", result)
    table.select(["photo_id"]).to_pandas().to_csv(tmp_path / "photos.csv", index=False)
    with pytest.raises(InvalidInput, match=r"array of shape \[3, 32, 32\] a row: .*found none \(CSV holds no arrays\)"):
        score("scenes", "challenger", [str(tmp_path / "photos.csv")], str(tmp_path / "csv.parquet"), settings=settings)
    assert not (tmp_path / "csv.parquet").exists()
