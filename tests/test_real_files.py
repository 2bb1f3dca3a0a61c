"""Department files shaped like real public exports (issue 20): flags spelled 0/1, TRUE/FALSE, Yes/no, t/f and
y/n, row-number and id columns, a bare year, a date, a 92/8 class split, rows without a target.

The quick tests read the files as ``civicml init`` and the data step do, and check requests with the
validator a server compiles from a model's signature and metadata. The slow test takes two exports through
``civicml init -> tune -> promote -> serve -> explain`` in fresh processes, from an empty current folder,
with a fresh home and no MLflow variables in the environment.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from civicml.booleans import model_value
from app.cli import main
from civicml.errors import InvalidInput
from projects.spec import load_spec
from projects.tabular import TabularUseCase
from projects.tabular.detect import guess_type
from serving.dataplane import OutOfRange, Table, Validator
from tabular_exports import bus_trips, permit_days

CLI = str(Path(sys.executable).parent / "civicml")


def _init(capsys, name: str, data: Path, target: str) -> tuple[str, dict]:
    code = main(["init", name, "--data", str(data), "--target", target])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out, yaml.safe_load((Path(name) / "usecase.yaml").read_text())


def test_init_guesses_flags_ids_and_years_and_prints_the_schema(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out, spec = _init(capsys, "trips", bus_trips(tmp_path / "exports", n=300, seed=1), "Delayed")
    assert spec["types"]["Weekend"] == spec["types"]["Holiday"] == spec["types"]["Rain"] == "boolean"
    assert spec["types"]["rownames"] == "id" and spec["features"] == {"all_but": ["rownames"]}
    assert spec["types"]["Year"] == "year"
    assert spec["holdout"] == {"split": "time", "column": "Year", "fraction": 0.2}
    lines = out.splitlines()
    table = lines[:lines.index(next(x for x in lines if x.startswith("wrote ")))]  # the table comes first
    assert table[0].split() == ["column", "type", "role", "why"]
    rows = {line.split()[0]: line.split()[1:3] for line in table[1:]}
    assert rows["Delayed"] == ["category", "target"] and rows["rownames"] == ["id", "id"]
    assert rows["Weekend"] == ["boolean", "feature"] and rows["Year"] == ["year", "feature"]
    assert "the time of the held-out split" in next(x for x in table if x.startswith("Year"))

    out, spec = _init(capsys, "permits", permit_days(tmp_path / "exports", n=200, seed=1), "days_to_issue")
    assert spec["task"] == "regression"
    assert {c: spec["types"][c] for c in ("Unnamed: 0", "permit_id", "applied", "Express", "Corner", "Solar")} == {
        "Unnamed: 0": "id", "permit_id": "id", "applied": "date", "Express": "boolean", "Corner": "boolean",
        "Solar": "boolean"}
    assert spec["features"] == {"all_but": ["Unnamed: 0", "permit_id"]}
    assert spec["holdout"]["split"] == "time" and spec["holdout"]["column"] == "applied"


GUESSES = [([0, 1, 1, 0] * 10, "boolean"), (["Yes", "no", "YES", "No"] * 10, "boolean"), ([True, False] * 20, "boolean"),
           (["t", "F"] * 20, "boolean"), (["y", "N"] * 20, "boolean"), (["TRUE", "false"] * 20, "boolean"),
           (["yes", "no", "maybe"] * 10, "category"), (list(range(7, 47)), "id"),
           ([2010 + i % 6 for i in range(40)], "year"),
           ([1950.0 + 2 * i for i in range(40)], "numeric")]  # 40 distinct values in 40 rows, unnamed: not years


def test_a_column_type_is_guessed_from_its_values_and_name():
    assert [guess_type("value", pd.Series(values)) for values, _ in GUESSES] == [kind for _, kind in GUESSES]
    one_each = pd.Series(np.random.default_rng(0).permutation(500)[:40])
    names = ["id", "rownames", "site_id", "Unnamed: 0", "SiteID", "index"]
    assert [guess_type(name, one_each) for name in names] == ["id"] * len(names)
    assert guess_type("paid", one_each) == "numeric" and guess_type("Year", pd.Series([1999, 2001] * 5)) == "year"


def _use_case(tmp_path: Path, data: Path, target: str, holdout: dict, types: dict | None = None) -> TabularUseCase:
    spec = {"name": "t", "task": "classification" if target == "Delayed" else "regression", "target": target,
            "sources": [{"path": str(data)}], "holdout": holdout, "families": ["linear"], "types": types or {}}
    path = tmp_path / "usecase.yaml"
    path.write_text(yaml.safe_dump(spec))
    return TabularUseCase(load_spec(path), home=tmp_path / "home")


def test_a_time_split_holds_out_a_fraction_of_rows_on_a_year_or_a_date(tmp_path):
    trips = bus_trips(tmp_path / "exports", n=600, seed=3)
    uc = _use_case(tmp_path, trips, "Delayed", {"split": "time", "column": "Year", "fraction": 0.2})
    train = uc.integrate(uc.generate_sources(None))
    held = uc.holdout()
    share = len(held) / (len(held) + len(train))
    assert 0.12 <= share <= 0.28  # whole years: the cut nearest 20% of the rows (a year is ~1/12 of them)
    assert held.frame["Year"].min() > train.frame["Year"].max()
    # declared a date, a bare year is 1 January of that year, and the fraction is still one of rows
    uc = _use_case(tmp_path, trips, "Delayed", {"split": "time", "column": "Year", "fraction": 0.2},
                   {"Year": "date"})
    train, held = uc.integrate(uc.generate_sources(None)), uc.holdout()
    assert len(held) / (len(held) + len(train)) == share
    assert pd.to_datetime(held.frame["Year"]).min() == pd.Timestamp(f"{held.frame['Year'].min()[:4]}-01-01")
    assert pd.to_datetime(train.frame["Year"]).dt.year.min() == 2008
    permits = permit_days(tmp_path / "exports", n=500, seed=3)
    uc = _use_case(tmp_path, permits, "days_to_issue", {"split": "time", "column": "applied", "fraction": 0.2},
                   {"applied": "date"})
    train, held = uc.integrate(uc.generate_sources(None)), uc.holdout()
    assert abs(len(held) / (len(held) + len(train)) - 0.2) < 0.01  # of rows, not of distinct dates
    assert pd.to_datetime(held.frame["applied"]).min() > pd.to_datetime(train.frame["applied"]).max()


def test_training_gives_a_model_one_value_per_meaning_of_a_flag(tmp_path):
    trips = bus_trips(tmp_path / "exports", n=300, seed=5)
    uc = _use_case(tmp_path, trips, "Delayed", {"split": "random", "fraction": 0.2},
                   {"Weekend": "boolean", "Holiday": "boolean", "Rain": "boolean", "rownames": "id"})
    data = uc.integrate(uc.generate_sources(None))
    for column in ("Weekend", "Holiday", "Rain"):  # TRUE/FALSE, 0/1 and Yes/yes/No/no in the file
        assert set(data.X[column]) == {"true", "false"}
    assert "rownames" not in data.features and len(data) < 300  # rows without a target are dropped
    checks = uc.input_checks(data)
    assert sorted(checks["booleans"]) == ["Holiday", "Rain", "Weekend"] and checks["out_of_range"] == "warn"
    assert checks["observed_ranges"]["hour"] == [float(data.X["hour"].min()), float(data.X["hour"].max())]


def _validator(out_of_range: str = "warn") -> Validator:
    signature = ModelSignature(inputs=Schema([ColSpec("string", "Weekend"), ColSpec("double", "hour"),
                                              ColSpec("long", "month"), ColSpec("string", "route")]))
    return Validator(signature, {"booleans": ["Weekend"], "observed_ranges": {"hour": [5.0, 22.0]},
                                 "out_of_range": out_of_range, "categories": {"month": list(range(1, 13))}})


def _table(**columns) -> Table:
    return Table({k: list(v) for k, v in columns.items()}, len(next(iter(columns.values()))))


def test_serving_reads_every_spelling_of_a_flag_as_one_value_and_refuses_others():
    v = _validator()
    spellings = [True, 1, 1.0, "yes", "Yes", "YES", " y ", "T", "true", "TRUE", "1"]
    seen = v.columns(_table(Weekend=spellings, hour=[8] * 11, month=[3] * 11, route=["R1"] * 11))
    assert list(seen.values["Weekend"]) == ["true"] * len(spellings)
    seen = v.columns(_table(Weekend=[False, 0, "No", "f", "False", "false"], hour=[8] * 6, month=[3] * 6,
                            route=["R1"] * 6))
    assert set(seen.values["Weekend"]) == {"false"}
    for bad in ("maybe", 2, "", None, [True]):
        with pytest.raises(InvalidInput, match="column 'Weekend'"):
            v.columns(_table(Weekend=[bad], hour=[8], month=[3], route=["R1"]))
    assert model_value("maybe") is None and model_value(np.bool_(True)) == "true"


def test_values_outside_the_training_range_warn_or_refuse_and_the_schema_says_which():
    warn, refuse = _validator("warn"), _validator("refuse")
    ok = _table(Weekend=[True, False], hour=[8.0, 25.0], month=[3, 4], route=["R1", "R2"])
    warn.columns(ok)  # answered
    notes = warn.out_of_range(ok)
    assert [(n["column"], n["rows"], n["range"]) for n in notes] == [("hour", [1], [5.0, 22.0])]
    with pytest.raises(OutOfRange, match="column 'hour' must be between 5 and 22.*got 25.0") as refused:
        refuse.columns(ok)
    assert refused.value.column == "hour" and refuse.out_of_range(ok) == []
    # the declared range of month (1-12) refuses in both modes
    for v in (warn, refuse):
        with pytest.raises(OutOfRange, match="column 'month' must be between 1 and 12"):
            v.columns(_table(Weekend=[True], hour=[8.0], month=[13], route=["R1"]))
    # the OpenAPI row schema says the same as the checks: bounds with refuse, none with warn
    hour_warn, hour_refuse = warn.json_schema()["properties"]["hour"], refuse.json_schema()["properties"]["hour"]
    assert (hour_refuse["minimum"], hour_refuse["maximum"]) == (5.0, 22.0)
    assert hour_warn["minimum"] < -1e300 and hour_warn["maximum"] > 1e300
    assert warn.json_schema()["properties"]["month"]["maximum"] == 12
    weekend = warn.json_schema()["properties"]["Weekend"]
    import jsonschema

    for accepted in (True, 1, "yes", "FALSE", " n "):
        jsonschema.validate(accepted, weekend)
    for refused_value in ("maybe", 2, None):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(refused_value, weekend)


# -- the whole path through the CLI, in fresh processes -------------------------------------------------------
def _env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CIVICML_"))}
    return {**env, "CIVICML_HOME": str(home)}


def _cli(args: list[str], cwd: Path, env: dict, code: int = 0) -> str:
    done = subprocess.run([CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == code, f"civicml {' '.join(args)}: {done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    def __init__(self, name: str, cwd: Path, env: dict):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(cwd.parent / f"serve-{name}.log", "w")
        self.process = subprocess.Popen([CLI, "serve", name, "--port", str(self.port), "--refresh", "0"], cwd=cwd,
                                        env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def __enter__(self):
        for _ in range(600):  # until it answers (or died)
            if self.process.poll() is not None:
                raise AssertionError(Path(self.log.name).read_text()[-3000:])
            try:
                if httpx.get(f"{self.url}/ping", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise AssertionError("the server never became ready: " + Path(self.log.name).read_text()[-3000:])

    def __exit__(self, *exc):
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()

    def predict(self, records: list[dict]) -> httpx.Response:
        return httpx.post(f"{self.url}/invocations", json={"dataframe_records": records}, timeout=60)


def _lifecycle(tmp_path: Path, name: str, data: Path, target: str, edit=None) -> tuple[Path, Path, dict]:
    """init -> tune -> promote, each in a fresh process, from an empty current folder."""
    cwd, home = tmp_path / "work", tmp_path / f"home-{name}"
    cwd.mkdir(exist_ok=True)
    env = _env(home)
    out = _cli(["init", name, "--data", str(data), "--target", target], cwd, env)
    assert out.index("column") < out.index("type") < out.index(f"wrote {name}/usecase.yaml")
    path = cwd / name / "usecase.yaml"
    if edit:
        spec = yaml.safe_load(path.read_text())
        edit(spec)
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
    out = _cli(["tune", "--use-case", str(path), "--n-trials", "1", "--families", "linear"], cwd, env)
    assert f"registered {name.replace('_', '-')} version 1" in out
    out = _cli(["promote", name], cwd, env)
    assert f"promoted {name} version 1 to 'champion'" in out
    return cwd, home, env


def _only_the_use_case_file(cwd: Path, names: list[str]) -> None:
    written = sorted(str(p.relative_to(cwd)) for p in cwd.rglob("*"))
    assert written == sorted([*names, *(f"{n}/usecase.yaml" for n in names)])


@pytest.mark.slow
def test_real_exports_from_init_to_serving_and_explain_in_fresh_processes(tmp_path):
    exports = tmp_path / "exports"
    trips = bus_trips(exports, n=500, seed=7)
    cwd, home, env = _lifecycle(tmp_path, "trips", trips, "Delayed")
    row = {"Year": 2015, "Weekend": True, "Holiday": 0, "Rain": "no", "hour": 8, "distance_km": 5.0, "route": "R1"}
    with _Server("trips", cwd, env) as server:
        answers = []
        for spelling in (True, 1, "yes", "Y", "TRUE"):
            response = server.predict([{**row, "Weekend": spelling}])
            assert response.status_code == 200, response.text
            assert "warnings" not in response.json()
            answers.append(response.json()["predictions"])
        assert all(a == answers[0] for a in answers)
        no = [server.predict([{**row, "Weekend": s}]).json()["predictions"] for s in (False, 0, "no", "False")]
        assert all(a == no[0] for a in no)
        csv = "Year,Weekend,Holiday,Rain,hour,distance_km,route\n2015,yes,0,no,8,5.0,R1\n"
        response = httpx.post(f"{server.url}/invocations", content=csv, headers={"content-type": "text/csv"})
        assert response.status_code == 200 and response.json()["predictions"] == answers[0]
        response = server.predict([{**row, "Weekend": "maybe"}])
        assert response.status_code == 400 and "column 'Weekend'" in response.json()["message"]
        response = server.predict([{**row, "hour": 25, "distance_km": -3.0}])  # warn (the default)
        assert response.status_code == 200, response.text
        assert {w["column"] for w in response.json()["warnings"]} == {"hour", "distance_km"}
        metrics = httpx.get(f"{server.url}/metrics").text
        assert 'civicml_out_of_range_total{column="hour",model="trips",outcome="warned"} 1.0' in metrics
        schema = httpx.get(f"{server.url}/openapi.json").json()
        body = schema["paths"]["/invocations"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        hour = body["oneOf"][0]["properties"]["dataframe_records"]["items"]["properties"]["hour"]
        assert hour["minimum"] < -1e300  # warn: no training bounds in the schema
    rows = tmp_path / "rows"
    rows.mkdir()
    (rows / "row.csv").write_text("Year,Weekend,Holiday,Rain,hour,distance_km,route\n2015,TRUE,0,no,8,5.0,R1\n")
    (rows / "bad.csv").write_text("Year,Weekend,Holiday,Rain,hour,distance_km,route\n2015,maybe,0,no,8,5.0,R1\n")
    out = _cli(["explain", "trips", "--input", str(rows / "row.csv"), "--json"], cwd, env)
    explained = json.loads(out[out.index("["):])
    assert explained[0]["model"]["version"] == "1"
    out = _cli(["explain", "trips", "--input", str(rows / "bad.csv")], cwd, env, code=2)
    assert "column 'Weekend'" in out and "Traceback" not in out

    permits = permit_days(exports, n=400, seed=8)
    cwd, home, env = _lifecycle(tmp_path, "permits", permits, "days_to_issue",
                                edit=lambda spec: spec.update(inputs={"out_of_range": "refuse"}))
    row = {"applied": "2024-06-03", "Express": "t", "Corner": False, "Solar": "n", "area_m2": 150.0, "zone": "R1"}
    with _Server("permits", cwd, env) as server:
        answers = [server.predict([{**row, "Express": s}]) for s in ("t", True, 1, "yes", "T")]
        assert all(a.status_code == 200 for a in answers), answers[0].text
        assert len({json.dumps(a.json()["predictions"]) for a in answers}) == 1
        response = server.predict([{**row, "area_m2": -40.0}])  # refuse: 400 naming the column and range
        assert response.status_code == 400
        assert "column 'area_m2' must be between" in response.json()["message"]
        assert "range of the training data" in response.json()["message"]
        metrics = httpx.get(f"{server.url}/metrics").text
        assert 'civicml_out_of_range_total{column="area_m2",model="permits",outcome="refused"} 1.0' in metrics
        schema = httpx.get(f"{server.url}/openapi.json").json()
        body = schema["paths"]["/invocations"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        area = body["oneOf"][0]["properties"]["dataframe_records"]["items"]["properties"]["area_m2"]
        assert 0 < area["minimum"] < area["maximum"] < 10_000  # the training range
    _only_the_use_case_file(cwd, ["permits", "trips"])  # no mlruns, store or home in the current folder
