"""Use-case files: checked field by field, bad department files stop the data step in one line, init guesses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from app.cli import main
from civicml.errors import InvalidInput
from projects import get_use_case, list_use_cases, metrics
from projects.spec import load_spec
from tabular_exports import HOURLY_YAML, INSPECTIONS_YAML, hourly_counts, inspections


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("exports")
    inspections(folder, n=300, seed=1)
    hourly_counts(folder, days=20, stations=2, seed=1)
    return folder


def _write(folder: Path, text: str, name: str = "usecase.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def _spec(exports: Path, edit=None, base=INSPECTIONS_YAML, families="decision_tree") -> Path:
    data = yaml.safe_load(base.format(name="inspections", families=families))
    if edit:
        edit(data)
    return _write(exports, yaml.safe_dump(data, sort_keys=False), "edited.yaml")


def _run(argv, capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# -- the file itself ------------------------------------------------------------------------------
@pytest.mark.parametrize("edit, fragment", [
    (lambda d: d.update(targte=d.pop("target")), "unknown field 'targte' (did you mean 'target'?)"),
    (lambda d: d.update(task="clasification"), "did you mean 'classification'?"),
    (lambda d: d["types"].update(notes="txt"), "field 'types.notes' must be one of"),
    (lambda d: d.update(metric="macro_f2"), "unknown metric 'macro_f2' (did you mean 'macro_f1'?)"),
    (lambda d: d.update(metric="mae"), "'mae' is a regression metric"),
    (lambda d: d.update(families=["random_forrest"]), "did you mean 'random_forest'?"),
    (lambda d: d["sources"][1]["join"].update(hw="left"), "unknown field 'sources[1].join.hw' (did you mean 'how'?)"),
    (lambda d: d["sources"][1]["join"]["time"].update(tolerance="sixty days"), "is not a duration"),
    (lambda d: d["sources"][0]["timezone"].update(inspected_at="Mars/Olympus"), "is not a known time zone"),
    (lambda d: d.update(holdout={"split": "time"}), "field 'holdout.column' is required"),
    (lambda d: d["privacy"].update(mask=["inspector"]), "already under 'drop'"),
    (lambda d: d.update(search=["decision_tree.depth=2:5"]), "has no parameter 'depth'"),
])
def test_a_mistake_in_the_file_is_one_line_naming_the_field(exports, capsys, tmp_path, edit, fragment):
    path = _spec(exports, edit)
    code, _, err = _run(["data", "--use-case", str(path), "--home", str(tmp_path / "home")], capsys)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("civicml: error: "), err
    assert fragment in err
    assert not (tmp_path / "home").exists()


# -- bad department files ---------------------------------------------------------------------------
def _bad_frame(exports: Path, change) -> Path:
    frame = pd.read_csv(exports / "inspections.csv")
    change(frame)
    folder = exports / "bad"
    folder.mkdir(exist_ok=True)
    frame.to_csv(folder / "inspections.csv", index=False)
    (folder / "complaints.csv").write_bytes((exports / "complaints.csv").read_bytes())
    return folder


@pytest.mark.parametrize("change, edit, fragment", [
    (lambda f: f.drop(columns=["violation"], inplace=True), None, "no column 'violation'"),
    (lambda f: f.__setitem__("violation", "no"), None, "has 1 class in"),
    (lambda f: f.__setitem__("insp_date", "next tuesday"), None, "are not dates"),
    (lambda f: f.__setitem__("site_id", f["site_id"] + 50_000), None, "matches no row"),
    (lambda f: f.__setitem__("cuisine", "x"), lambda d: d["types"].update(cuisine="numeric"),
     "declared numeric but"),
    (lambda f: f.__setitem__("contact", [f"a{i}@example.org" for i in range(len(f))]), None,
     "'contact' looks like e-mail addresses"),
])
def test_a_bad_file_stops_the_data_step_in_one_line(exports, capsys, tmp_path, change, edit, fragment):
    folder = _bad_frame(exports, change)

    def point_here(d):
        for s in d["sources"]:
            s["path"] = str(folder / Path(s["path"]).name)
        if edit:
            edit(d)

    path = _spec(exports, point_here)
    home = tmp_path / "home"
    code, _, err = _run(["tune", "--use-case", str(path), "--n-trials", "1", "--home", str(home)], capsys)
    assert code == 2, err
    assert err.count("\n") == 1 and fragment in err, err
    assert not (home / "mlflow.db").exists() and not (home / "optuna.db").exists()


def test_undeclared_personal_data_fails_the_data_step(exports, capsys, tmp_path):
    path = _spec(exports, lambda d: d["privacy"].update(drop=["complainant_email"]))
    code, _, err = _run(["data", "--use-case", str(path), "--home", str(tmp_path / "h")], capsys)
    assert code == 2
    assert "undeclared personal data: 'inspector' looks like people's names" in err
    assert "@" not in err  # names columns, never values


# -- a good file ---------------------------------------------------------------------------------
def test_data_prints_the_integration_report_and_trains_nothing(exports, capsys, tmp_path):
    path = _write(exports, INSPECTIONS_YAML.format(name="inspections", families="decision_tree"))
    home = tmp_path / "home"
    code, out, err = _run(["data", "--use-case", str(path), "--home", str(home)], capsys)
    assert code == 0, err
    assert "join left complaints.csv on site_id (time within 60d)" in out
    assert "privacy: dropped ['inspector', 'complainant_email']" in out
    assert "notes (text)" in out and "inspected_at (date)" in out and "risk_code (category)" in out
    assert "held-out last 20% of rows by inspected_at: 60 rows" in out  # 20% of the 300 rows
    assert not (home / "mlflow.db").exists()


def test_integration_joins_on_key_and_time_maps_codes_and_masks(exports):
    uc = get_use_case(str(_write(exports, INSPECTIONS_YAML.format(name="inspections", families="linear"))))
    ds = uc.integrate(uc.generate_sources(None))
    held = uc.holdout(None)
    assert len(ds) + len(held) == 300 and len(held) >= 50
    assert set(ds.frame["risk_code"]) <= {"high", "medium", "low"}
    assert ds.X["inspected_at"].max() < held.X["inspected_at"].min()  # by time: the last dates are held out
    # merge_asof: the matched complaint is the latest one at or before the inspection, within 60 days
    raw = pd.read_csv(exports / "complaints.csv")
    matched = ds.frame.dropna(subset=["complaints_30d"])
    assert 0 < len(matched) < len(ds)
    row = matched.iloc[0]
    when = pd.Timestamp(row["inspected_at"])
    same = raw[raw["SiteID"].astype(str) == str(int(row["site_id"]))]
    received = (pd.to_datetime(same["received"]).dt.tz_localize("America/Chicago").dt.tz_convert("UTC")
                .dt.tz_localize(None))
    before = received[(received <= when) & (received >= when - pd.Timedelta("60D"))]
    assert len(before) and same.loc[before.idxmax(), "complaints_30d"] == row["complaints_30d"]
    texts = " ".join(ds.frame["notes"])
    assert "555-" not in texts and "[PHONE]" in " ".join(pd.concat([ds.frame["notes"], held.frame["notes"]]))
    assert "inspector" not in ds.frame.columns


def test_units_time_zones_and_a_regression_file(exports):
    uc = get_use_case(str(_write(exports, HOURLY_YAML.format(name="hourly", families="linear, hist_gradient_boosting"),
                                "hourly.yaml")))
    assert uc.task == "regression" and uc.metric == "mae" and uc.direction == "minimize"
    ds = uc.integrate(uc.generate_sources(None))
    raw = pd.read_parquet(exports / "ridership.parquet")
    assert "temp_c" in ds.features and "temp_f" not in ds.frame.columns
    assert abs(ds.frame["temp_c"].mean() - ((raw["temp_f"] * 0.5556) - 17.78).mean()) < 1.0
    assert uc.families["hist_gradient_boosting"].space["max_iter"].high == 150  # search override from the file


def test_metrics_live_in_one_module():
    assert metrics.direction("macro_f1") == "maximize" and metrics.direction("rmse") == "minimize"
    assert metrics.compute("mae", [1, 2], [2, 4]) == 1.5
    assert metrics.compute("r2", [1, 2, 3], [1, 2, 3]) == 1.0
    assert metrics.compute("balanced_accuracy", ["a", "b", "b"], ["a", "b", "a"]) == pytest.approx(0.75)
    with pytest.raises(InvalidInput, match="did you mean 'rmse'"):
        metrics.get("rsme")
    with pytest.raises(InvalidInput):
        metrics.get("roc_auc")  # needs probabilities, not a metric of predictions


def test_init_guesses_types_and_flags_personal_data(exports, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(["init", "insp", "--data", str(exports / "inspections.csv"), "--target", "violation"],
                          capsys)
    assert code == 0, err
    assert "'inspector' looks like people's names" in out and "'notes' looks like free text holding phone" in out
    spec = load_spec(tmp_path / "insp" / "usecase.yaml")
    assert spec.task == "classification" and spec.target == "violation"
    assert spec.types["insp_date"] == "date" and spec.types["notes"] == "text"
    assert spec.types["cuisine"] == "category" and spec.types["inspection_id"] == "id"
    assert spec.privacy.drop == ("inspector",) and spec.privacy.mask == ("notes",)
    code, _, err = _run(["init", "insp", "--data", str(exports / "inspections.csv"), "--target", "violaton"],
                        capsys)
    assert code == 2 and "exists" in err
    code, _, err = _run(["init", "other", "--data", str(exports / "inspections.csv"), "--target", "violaton"],
                        capsys)
    assert code == 2 and "did you mean 'violation'?" in err and not (tmp_path / "other").exists()


def test_the_registry_finds_built_ins_paths_and_folders(exports, monkeypatch):
    assert {"service_requests", "street_scenes", "traffic_flow"} <= set(list_use_cases())
    _write(exports, HOURLY_YAML.format(name="hourly", families="linear, hist_gradient_boosting"))
    assert get_use_case(str(exports)).name == "hourly"  # a folder holding usecase.yaml
    monkeypatch.chdir(exports.parent)
    assert get_use_case(exports.name).name == "hourly"  # NAME/usecase.yaml under the current folder
    assert np.isfinite(len(get_use_case("service_requests").families))


def test_forecasting_adds_lagged_targets_a_horizon_ahead(exports):
    text = HOURLY_YAML.format(name="hourly_forecast", families="linear").replace("task: regression",
                                                                                 "task: forecasting")
    text = text.replace('search: ["hist_gradient_boosting.max_iter=50:150:step=50"]\n', "")
    text += "forecast: {time: hour_start, horizon: 24, lags: [1, 24], group: station}\n"
    text = text.replace("holdout: {split: random, fraction: 0.2, seed: 3}",
                        "holdout: {split: time, column: hour_start, fraction: 0.25}")
    uc = get_use_case(str(_write(exports, text, "forecast.yaml")))
    ds = uc.integrate(uc.generate_sources(None))
    assert uc.task == "regression" and {"riders_lag24", "riders_lag47"} <= set(ds.features)
    raw = pd.read_parquet(exports / "ridership.parquet")
    row = ds.frame.iloc[5]
    series = raw[raw["station"] == row["station"]].set_index("hour_start")["riders"]
    stamp = pd.Timestamp(row["hour_start"])
    assert series[(stamp - pd.Timedelta(hours=24)).strftime("%Y-%m-%dT%H:%M:%S")] == row["riders_lag24"]
    assert ds.report["forecast"]["rows_without_history"] == 2 * 47  # per station, the first hours lack history
    from projects.base import NullReporter

    train, valid = uc.split(ds)
    model = uc.families["linear"].fit(train, valid, uc.families["linear"].defaults, NullReporter())
    held = uc.holdout(None)
    naive = metrics.compute("mae", held.y, held.frame["riders_lag24"])
    assert metrics.compute("mae", held.y, model.predict(held.X)) < naive * 1.2


def test_a_new_study_starts_with_the_default_gradient_boosting_baseline(exports, tmp_path):
    from civicml.settings import Settings
    from projects import load_dataset
    from projects.tabular.families import HistGradientBoosting
    from tuning import tune

    uc = get_use_case(str(_write(exports, HOURLY_YAML.format(name="hourly_base", families="linear, "
                                                             "hist_gradient_boosting"), "base.yaml")))
    assert uc.baseline_trials == {"hist_gradient_boosting": HistGradientBoosting.defaults}
    # scikit-learn's own defaults (l2_regularization 0 is searched on a log scale from 1e-4)
    from sklearn.ensemble import HistGradientBoostingRegressor

    sk = HistGradientBoostingRegressor().get_params()
    assert all(sk[k] == v for k, v in HistGradientBoosting.defaults.items()
               if k not in ("l2_regularization", "class_weight"))  # class_weight: classifiers' (None, theirs too)
    settings = Settings.from_env(env={}, home=tmp_path / "home")
    result = tune(uc, load_dataset(uc, uc.generate_sources(None)), n_trials=1, settings=settings)
    assert result.best_params == {"family": "hist_gradient_boosting",
                                  **{f"hist_gradient_boosting.{k}": v for k, v in HistGradientBoosting.defaults.items()}}


def test_hashed_columns_use_a_secret_salt_kept_under_the_home(exports, tmp_path):
    import stat

    from projects.tabular import TabularUseCase
    from projects.tabular.secret import SALT_FILE

    def hashed(home):
        path = _spec(exports, lambda d: d["privacy"].update(drop=["inspector"], hash=["complainant_email"]))
        uc = TabularUseCase.from_file(path, home=home)
        return uc.integrate(uc.generate_sources(None)).frame["complainant_email"]

    first, again, other = hashed(tmp_path / "a"), hashed(tmp_path / "a"), hashed(tmp_path / "b")
    assert first.notna().sum() > 20 and first.equals(again)  # the same home: the same hashes
    assert not (first.dropna() == other.dropna()).any()  # another home: none alike
    salt = tmp_path / "a" / SALT_FILE
    assert stat.S_IMODE(salt.stat().st_mode) == 0o600 and len(salt.read_text().strip()) == 64
    raw = set(pd.read_csv(exports / "complaints.csv")["complainant_email"])
    assert not raw & set(first.dropna())


def test_an_inline_policy_is_written_under_the_home(exports, tmp_path):
    from projects.tabular import TabularUseCase
    from registry.policy import PromotionPolicy

    uc = TabularUseCase.from_file(_spec(exports), home=tmp_path / "home")
    path = uc.policy_file
    assert path.parent == tmp_path / "home" / "policies" and uc.policy_file == path
    assert PromotionPolicy.from_yaml(path).thresholds == {"accuracy": 0.5}
    # a typo of any scikit-learn scorer name gets a suggestion
    with pytest.raises(InvalidInput, match="did you mean 'balanced_accuracy'"):
        PromotionPolicy.from_dict({"version": 1, "metric": "balanced_acuracy"})


def test_a_paddle_mlp_regressor_is_logged_to_take_raw_rows(exports, tmp_path):
    import mlflow

    from civicml.settings import Settings
    from civicml.tracking import configure
    from projects.base import HistoryReporter

    uc = get_use_case(str(_write(exports, HOURLY_YAML.format(name="hourly_mlp", families="paddle_mlp, "
                                                             "hist_gradient_boosting"), "mlp.yaml")))
    ds = uc.integrate(uc.generate_sources(None))
    train, valid = uc.split(ds)
    family = uc.families["paddle_mlp"]
    reporter = HistoryReporter()
    model = family.fit(train, valid, family.check_params({"epochs": 15}), reporter)
    assert len(reporter.values) >= 5  # the validation MAE every epoch: a tuner can prune it
    held = uc.holdout(None)
    mine = model.predict(held.X)
    naive = metrics.compute("mae", held.y, np.full(len(held), train.y.mean()))
    assert metrics.compute("mae", held.y, mine) < 0.9 * naive  # it learnt something from the raw columns
    configure(Settings.from_env(env={}, home=tmp_path / "home"))
    with mlflow.start_run():
        uri = model.log_model("model", ds.X.head(3), {})
    served = mlflow.pyfunc.load_model(uri).predict(held.X)  # raw rows: dates as text, station codes
    assert np.allclose(served, mine, rtol=1e-4, atol=1e-3)
