"""traffic_flow: two departments' sources, cleaning, the Paddle MLP vs seasonal baselines, its pyfunc, its Project."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from civicml.errors import InvalidInput, NotFound
from civicml.settings import Settings
from projects import get_use_case, load_dataset, train
from projects.base import HistoryReporter
from conftest import download_logged, load_logged, logged_info, run_in_clean_process

ROOT = Path(__file__).resolve().parents[1]
N_ROWS = 8000  # 5 sensors x 1600 hours, about 9.5 weeks
PARAMS = {"epochs": 15}


@pytest.fixture(scope="module")
def use_case():
    return get_use_case("traffic_flow")


@pytest.fixture(scope="module")
def sources(use_case, tmp_path_factory):
    return use_case.generate_sources(tmp_path_factory.mktemp("traffic"), n=N_ROWS, seed=11)


@pytest.fixture(scope="module")
def dataset(use_case, sources):
    return load_dataset(use_case, sources)


@pytest.fixture(scope="module")
def trained(use_case, dataset, tmp_path_factory):
    settings = Settings.from_env(env={}, home=tmp_path_factory.mktemp("home"))
    reporter = HistoryReporter()
    result = train(use_case, dataset, "mlp", PARAMS, settings=settings, seed=0, reporter=reporter)
    return settings, result, reporter


def test_two_departments_publish_different_schemas(sources):
    sensors, weather = sources
    assert sensors.suffix == ".csv" and weather.suffix == ".json"
    head = pd.read_csv(sensors, nrows=5, dtype=str)
    assert list(head.columns) == ["sensor_id", "timestamp", "vehicle_count"]
    assert head["timestamp"].str.match(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}$").all()
    doc = json.loads(weather.read_text())
    assert doc["units"] == {"temperature": "degF", "precipitation": "in/h"}
    first = doc["observations"][0]
    assert set(first) == {"t", "temp_f", "precip_in", "conditions"} and isinstance(first["t"], int)
    # the first local sensor hour, 2024-01-01 00:00 at UTC+1, is 23:00 UTC the day before
    assert first["t"] == int(pd.Timestamp("2023-12-31 23:00", tz="UTC").timestamp())


def test_generator_is_seeded(use_case, tmp_path):
    a = use_case.generate_sources(tmp_path / "a", n=3000, seed=5)
    b = use_case.generate_sources(tmp_path / "b", n=3000, seed=5)
    c = use_case.generate_sources(tmp_path / "c", n=3000, seed=6)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    assert a[0].read_bytes() != c[0].read_bytes()


def test_integration_cleans_and_reports_what_it_did(dataset):
    report = dataset.report
    for key in ("duplicates_dropped", "missing_hours_added", "missing_readings", "stuck_readings_removed",
                "readings_interpolated", "weather_hours_filled", "interpolated_targets_excluded",
                "rows_without_history"):
        assert report[key] > 0, key
    frame = dataset.frame
    assert not frame[list(dataset.features) + [dataset.target]].isna().any().any()
    assert not frame.duplicated(["sensor_id", "timestamp"]).any()
    assert frame["sensor_id"].nunique() == 5
    # no row is left from a stuck stretch: its target was removed, and a stuck value never becomes a target
    assert report["rows"] == len(frame)
    # weather arrives in Celsius and mm/h, in local time
    assert -30 < frame["temp_c"].min() and frame["temp_c"].max() < 40
    assert frame["precip_mm"].min() >= 0


def test_stuck_runs_are_removed_and_short_gaps_interpolated(use_case, tmp_path):
    hours = pd.date_range("2024-01-01", periods=24 * 9, freq="h")
    rng = np.random.default_rng(0)
    counts = (200 + 100 * np.sin(np.arange(len(hours)) / 3.0) + rng.normal(0, 5, len(hours))).round()
    counts[100:106] = counts[99]  # stuck for 6 more hours after a real reading
    counts[150:152] = np.nan  # a short gap
    frame = pd.DataFrame({"sensor_id": "X1", "timestamp": hours.strftime("%Y-%m-%d %H:%M"),
                          "vehicle_count": [("" if np.isnan(v) else str(int(v))) for v in counts]})
    frame.to_csv(tmp_path / "x.csv", index=False)
    utc = hours - pd.Timedelta(hours=1)
    (tmp_path / "w.json").write_text(json.dumps({"units": {"temperature": "degF", "precipitation": "in/h"},
                                                 "observations": [{"t": int(t.timestamp()), "temp_f": 50.0,
                                                                   "precip_in": 0.0} for t in utc]}))
    ds = use_case.integrate([tmp_path / "x.csv", tmp_path / "w.json"])
    assert ds.report["stuck_readings_removed"] == 7
    assert ds.report["readings_interpolated"] == 2
    assert ds.report["interpolated_targets_excluded"] == 2
    assert abs(ds.frame["temp_c"] - 10.0).max() < 1e-9
    kept = set(ds.frame["timestamp"])
    assert not kept & set(hours[99:106]) and not kept & set(hours[150:152])


def test_bad_sources_fail_with_clear_errors(use_case, tmp_path, sources):
    with pytest.raises(NotFound):
        load_dataset(use_case, [tmp_path / "missing.csv", sources[1]])
    with pytest.raises(InvalidInput, match="weather JSON"):
        use_case.integrate([sources[0]])
    (tmp_path / "bad.csv").write_text("sensor,when,count\nA,2024-01-01 00:00,3\n")
    with pytest.raises(InvalidInput, match="lacks column"):
        use_case.integrate([tmp_path / "bad.csv", sources[1]])
    (tmp_path / "w.json").write_text('{"readings": []}')
    with pytest.raises(InvalidInput, match="observations"):
        use_case.integrate([sources[0], tmp_path / "w.json"])


def test_validation_is_the_latest_quarter(use_case, dataset):
    train_part, valid_part = use_case.split(dataset, seed=0)
    assert train_part.frame["timestamp"].max() < valid_part.frame["timestamp"].min()
    assert 0.2 < len(valid_part) / len(dataset) < 0.3


@pytest.mark.slow
def test_mlp_clearly_beats_the_seasonal_baselines(use_case, dataset, trained):
    from projects.traffic_flow.model import seasonal_baselines

    settings, result, reporter = trained
    _, valid = use_case.split(dataset, seed=0)
    baselines = seasonal_baselines(valid.frame)
    best_naive = min(baselines.values())
    assert result.metrics["mae"] < 0.75 * best_naive, (result.metrics, baselines)  # about 0.5 measured
    assert {"mae", "rmse", "mape"} <= set(result.metrics)
    assert 1 <= len(reporter.values) <= PARAMS["epochs"]
    assert min(v for _, v in reporter.values) == pytest.approx(result.metrics["mae"], rel=1e-6)
    client = mlflow.MlflowClient(settings.tracking_uri)
    run = client.get_run(result.run_id)
    assert run.data.metrics["baseline_mae_last_week"] == pytest.approx(baselines["baseline_mae_last_week"])
    assert run.data.tags["civicml.data_fingerprint"] == dataset.fingerprint
    assert len(client.get_metric_history(result.run_id, "valid_mae")) == len(reporter.values)
    assert len(client.get_metric_history(result.run_id, "train_mae")) == len(reporter.values)
    plots = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert {"plots/forecast_vs_actual_week.png", "plots/validation_curve.png"} <= plots
    cleaning = json.loads(Path(client.download_artifacts(result.run_id, "data/dataset.json")).read_text())
    assert cleaning["cleaning"]["stuck_readings_removed"] == dataset.report["stuck_readings_removed"]


@pytest.mark.slow
def test_logged_model_reproduces_training_on_batches_of_1_and_64(use_case, dataset, trained):
    settings, result, _ = trained
    model = load_logged(settings, result.model_uri)
    _, valid = use_case.split(dataset, seed=0)
    forecast = model.predict(valid.X)
    assert forecast.shape == (len(valid),)
    assert np.mean(np.abs(forecast - valid.y.to_numpy())) == pytest.approx(result.metrics["mae"], rel=1e-5)
    batch = model.predict(valid.X.head(64))
    assert np.allclose(batch, forecast[:64], rtol=1e-5)
    for i in (0, 31, 63):
        one = model.predict(valid.X.iloc[i:i + 1])
        assert one.shape == (1,) and one[0] == pytest.approx(batch[i], rel=1e-5)
    # column order does not matter, extra columns are ignored; missing or non-numeric columns are refused
    shuffled = valid.frame.head(8)[["sensor_id", "timestamp"] + list(reversed(valid.features))]
    assert np.allclose(model.predict(shuffled), forecast[:8], rtol=1e-5)
    with pytest.raises(Exception, match="lag_2"):
        model.predict(valid.X.head(2).drop(columns="lag_2"))
    with pytest.raises(Exception, match="temp_c"):
        model.predict(valid.X.head(2).assign(temp_c="warm"))


@pytest.mark.slow
def test_logged_model_carries_signature_metadata_and_example(trained):
    from projects.traffic_flow import FEATURES

    settings, result, _ = trained
    info = logged_info(settings, result.model_uri)
    assert info.signature.inputs.input_names() == list(FEATURES)
    assert {c.type.name for c in info.signature.inputs.inputs} == {"double"}
    assert info.metadata["use_case"] == "traffic_flow" and info.metadata["task"] == "regression"
    assert info.metadata["features"] == list(FEATURES)
    assert info.saved_input_example_info is not None
    assert "python_model" not in info.flavors["python_function"]


@pytest.mark.slow
def test_logged_model_loads_where_projects_is_not_importable(trained, dataset, tmp_path):
    settings, result, _ = trained
    local = download_logged(settings, result.model_uri, str(tmp_path / "model"))
    frame = dataset.X.head(64)
    frame.to_json(tmp_path / "rows.json", orient="split")
    expected = mlflow.pyfunc.load_model(local).predict(frame)
    script = (
        "import sys, pandas as pd, mlflow\n"
        "m = mlflow.pyfunc.load_model(sys.argv[1])\n"
        "x = pd.read_json(sys.argv[2], orient='split').astype('float64')\n"
        "result = {'all': m.predict(x).tolist(), 'one': m.predict(x.head(1)).tolist()}\n"
    )
    answer = run_in_clean_process(script, local, str(tmp_path / "rows.json"), cwd=tmp_path)
    assert answer["projects_loaded"] is False
    assert np.allclose(answer["all"], expected, rtol=1e-5)
    assert np.allclose(answer["one"], expected[:1], rtol=1e-5)


@pytest.mark.slow
def test_logged_model_predicts_from_many_threads_at_once(trained, dataset):
    settings, result, _ = trained
    model = load_logged(settings, result.model_uri)
    frame = dataset.X.head(64)
    expected = model.predict(frame)
    answers, errors = [], []

    def worker(k):
        try:
            for _ in range(5):
                answers.append(np.allclose(model.predict(frame.iloc[k:k + 40]), expected[k:k + 40], rtol=1e-5))
        except Exception as err:  # noqa: BLE001 - collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(answers) == 40 and all(answers)


@pytest.mark.slow
def test_fit_is_deterministic_for_a_seed(use_case, dataset):
    from projects.base import NullReporter

    train_part, valid_part = use_case.split(dataset)
    family = use_case.family("mlp")
    params = {**family.defaults, "epochs": 2, "hidden": 32, "seed": 3}
    first = family.fit(train_part, valid_part, params, NullReporter()).predict(valid_part.X)
    second = family.fit(train_part, valid_part, params, NullReporter()).predict(valid_part.X)
    assert np.array_equal(first, second)


@pytest.mark.slow
def test_mlflow_run_trains_the_project(tmp_path):
    from test_street_scenes import run_project

    done, settings = run_project("traffic_flow", {"rows": 3000, "epochs": 3, "seed": 1}, tmp_path)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-4000:])
    client = mlflow.MlflowClient(settings.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("traffic_flow").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert {"mae", "rmse", "mape", "baseline_mae_last_week"} <= set(runs[0].data.metrics)
    assert runs[0].data.params["epochs"] == "3"
    assert "civicml.model_uri" in runs[0].data.tags


@pytest.mark.slow
def test_served_inputs_are_limited_to_what_the_model_answers(trained, dataset):
    """The traffic network answers no missing value and no astronomically large count: the served schema
    allowed null and +-1.8e308 and the model then failed (422). At load the server asks the model, and the
    checks and the schema say the same thing: 400 naming the column, no null, a finite bound."""
    from fastapi.testclient import TestClient

    import registry
    from serving import Endpoint, create_app

    settings, result, _ = trained
    registry.register(result.model_uri, "traffic-limits", settings=settings)
    endpoint = Endpoint("traffic-limits", alias="1", settings=settings, refresh_seconds=0)
    row = {k: (v.item() if hasattr(v, "item") else v) for k, v in dataset.X.iloc[0].items()}
    with TestClient(create_app(endpoint, follow=False)) as client:
        assert client.post("/invocations", json={"dataframe_records": [row]}).status_code == 200
        schema = endpoint.current.validator.json_schema()["properties"]["lag_1"]
        assert schema["type"] == "number" and schema["maximum"] < 1e308, schema
        missing = client.post("/invocations", json={"dataframe_records": [{**row, "lag_1": None}]})
        assert missing.status_code == 400 and "lag_1" in missing.json()["message"], missing.text
        huge = client.post("/invocations", json={"dataframe_records": [{**row, "lag_1": 1.7e308}]})
        assert huge.status_code == 400 and "lag_1" in huge.json()["message"], huge.text
        edge = client.post("/invocations", json={"dataframe_records": [{**row, "lag_1": schema["maximum"]}]})
        assert edge.status_code == 200, edge.text  # what the schema allows is answered
