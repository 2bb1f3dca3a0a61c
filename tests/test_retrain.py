"""Retraining as a loop: a real small 311 router answers a season's requests, late labels join them, `retrain`
registers a challenger whose lineage names the champion and the traffic, and the recent-window gate judges
challengers on the labelled traffic they never trained on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from civicml.settings import Settings
from civicml.tags import (ATTR_WARM_START, TAG_DATA_FINGERPRINT, TAG_RETRAINED_FROM, TAG_STUDY, TAG_TRAFFIC_FINGERPRINT,
                          TAG_TRAFFIC_ROWS, TAG_TRAFFIC_WINDOW, TAG_TRIAL, TAG_WARM_START_STUDY)
from projects.space import Categorical

NAME = "retrained-router"
FEATURES = ["description", "district", "channel", "hour", "weekday"]
NARROW = {"logreg": {"char_ngrams": Categorical([False])}}  # word features only: fast trials


@dataclass
class Loop:
    settings: Settings
    home: Path
    use_case: object
    champion: str
    champion_params: dict
    holdout: pd.DataFrame
    labelled: int


@pytest.fixture(scope="module")
def loop(tmp_path_factory, requests_use_case, small_requests, requests_holdout) -> Loop:
    """A champion from a 2-trial study; a season's two weeks answered by it and recorded (masked), with the
    department of each closed ticket fed back as its outcome."""
    import mlflow.pyfunc

    import registry
    from monitoring import add_feedback, open_store, recorder_for
    from projects.service_requests.season import SeasonSettings, generate_season
    from registry import PromotionPolicy
    from tuning import tune

    home = tmp_path_factory.mktemp("retrain") / "home"
    settings = Settings.from_env(env={}, home=home, user="tester")
    study = tune(requests_use_case, small_requests, n_trials=2, families=["logreg"], overrides=NARROW,
                 study_name="router-study", settings=settings)
    version = registry.register(study.best_model_uri, NAME, settings=settings,
                                tags={TAG_STUDY: study.study_name, TAG_TRIAL: str(study.best_trial)})
    holdout = requests_holdout.frame.iloc[:200]
    promoted = registry.promote(NAME, holdout, "department", policy=PromotionPolicy(min_value=None), settings=settings)
    assert promoted.promoted, promoted.reason
    season = generate_season(7, SeasonSettings(weeks=2, per_week=260, new_kind_week=1, new_kind_share=0.5))
    model = mlflow.pyfunc.load_model(str(registry.resolve(NAME, settings=settings).path))
    answers = _labels(model.predict(season[FEATURES]))
    recorder = recorder_for(requests_use_case, "all", settings=settings)
    ids = [f"{i:032x}" for i in range(1, len(season) + 1)]
    for answer_id, (_, row), answer in zip(ids, season.iterrows(), answers):
        recorder.record({"answer_id": answer_id, "model": NAME, "version": version.version,
                         "inputs": {c: row[c] for c in (*FEATURES, "name", "phone", "email")},
                         "answer": str(answer), "time": row["created_at"].timestamp()})
    recorder.close()
    closed = season["labelled_at"].notna().to_numpy()
    pairs = [(i, d) for i, d, c in zip(ids, season["department"], closed) if c]
    store = open_store(settings=settings)
    assert add_feedback(store, pairs).joined == len(pairs)
    store.close()
    return Loop(settings, home, requests_use_case, version.version, dict(study.best_params), holdout, len(pairs))


def _labels(output) -> np.ndarray:
    from registry import predicted_labels

    return predicted_labels(output)


def _civicml(args: list[str], cwd: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CIVICML_"))}
    env["HOME"] = str(tmp_path / "fresh-home")
    civicml = Path(sys.executable).with_name("civicml")
    return subprocess.run([str(civicml), *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def retrained(loop, tmp_path_factory):
    """`civicml retrain` in a fresh process from an empty folder with a fresh HOME: (its JSON summary, the
    finished process, the folder)."""
    work = tmp_path_factory.mktemp("empty")
    done = _civicml(["retrain", NAME, "--home", str(loop.home), "--window", "7d", "--trials", "1", "--warm-trials",
                     "0", "--families", "logreg", "--set", "logreg.char_ngrams=false", "--rows", "300",
                     "--no-holdout", "--json"], work, tmp_path_factory.mktemp("fresh"))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout), done, work


def test_cli_retrain_in_a_fresh_process_from_an_empty_folder(loop, retrained):
    summary, done, work = retrained
    assert summary["retrained_from"] == loop.champion and summary["alias"] == "challenger"
    assert summary["traffic"]["rows"] > 100 and summary["source_rows"] > 250
    assert "retrain:" in done.stderr  # progress on stderr, stdout stays JSON
    assert sorted(p.name for p in work.iterdir()) == []  # nothing written into the folder


def test_retrain_registers_a_challenger_naming_the_champion_and_the_traffic(loop, retrained):
    import optuna

    summary = retrained[0]
    from monitoring import open_store
    from monitoring.retrain import labelled_traffic
    from registry import version_of

    challenger = version_of(NAME, "challenger", settings=loop.settings)
    champion = version_of(NAME, "champion", settings=loop.settings)
    assert challenger.version == summary["version"] != loop.champion
    tags = challenger.tags
    assert tags[TAG_RETRAINED_FROM] == loop.champion and tags[TAG_WARM_START_STUDY] == "router-study"
    rows = int(tags[TAG_TRAFFIC_ROWS])
    store = open_store(settings=loop.settings)
    trained = labelled_traffic(store, NAME, FEATURES, "department", "7d")
    judged = labelled_traffic(store, NAME, FEATURES, "department", "7d", judging=True)
    store.close()
    assert rows == trained.rows == summary["traffic"]["rows"] > 100 and tags[TAG_TRAFFIC_FINGERPRINT] == trained.fingerprint
    assert judged.rows > 30 and judged.until == trained.until  # the same window, the other share of its answers
    assert rows + judged.rows < loop.labelled  # only the most recent week, and never the judging share
    assert tags[TAG_TRAFFIC_WINDOW].startswith("7d: 2026-01-1")
    assert tags[TAG_DATA_FINGERPRINT] != champion.tags[TAG_DATA_FINGERPRINT]  # sources + traffic
    assert not any(s in " ".join(trained.frame["description"]) for s in ("@mail.example.org",))  # stored masked
    study = optuna.load_study(study_name=summary["study"]["study_name"], storage=loop.settings.optuna_storage)
    first = study.get_trials(deepcopy=False)[0]
    assert first.params == loop.champion_params  # warm start: the champion's own trial runs first
    assert f"champion v{loop.champion}" in first.user_attrs[ATTR_WARM_START]
    assert summary["warm_start"] == [first.user_attrs[ATTR_WARM_START]]


def test_the_warm_start_is_the_champions_trial_then_the_best_of_its_study(loop):
    import optuna

    from monitoring.retrain import warm_trials
    from registry import version_of
    from tuning import plan_study

    champion = version_of(NAME, loop.champion, settings=loop.settings)
    plan = plan_study(loop.use_case, families=["logreg"], overrides=NARROW, settings=loop.settings)
    warm = warm_trials(champion, plan, loop.use_case, loop.settings, limit=1)
    trials = optuna.load_study(study_name="router-study", storage=loop.settings.optuna_storage).trials
    other = next(t for t in trials if t.params != loop.champion_params)
    assert [w.params for w in warm] == [loop.champion_params, other.params]
    assert "(champion v" in warm[0].origin and warm[1].origin == f"study router-study trial {other.number}"
    wider = plan_study(loop.use_case, families=["logreg"], settings=loop.settings, overrides={
        "logreg": {"char_ngrams": Categorical([True])}})  # a space that holds neither: no warm start
    assert warm_trials(champion, wider, loop.use_case, loop.settings) == []


def test_retrain_refuses_without_labelled_traffic_and_stores_nothing(loop, small_requests, tmp_path):
    from civicml.errors import InvalidInput
    from monitoring.retrain import RetrainOptions, retrain
    from registry import versions

    before = len(versions(NAME, settings=loop.settings))
    with pytest.raises(InvalidInput, match="no labelled served answers"):
        retrain(NAME, small_requests, RetrainOptions(store_url=f"sqlite:///{tmp_path / 'empty.db'}"),
                settings=loop.settings)
    assert len(versions(NAME, settings=loop.settings)) == before


def _promote(loop, version: str, recent_window: dict):
    from monitoring import open_store
    from monitoring.retrain import recent_window_frame
    from registry import PromoteOptions, PromotionPolicy, promote

    policy = PromotionPolicy.from_dict({"min_value": None, "max_regression": 0.5, "recent_window": recent_window})
    store = open_store(settings=loop.settings)
    recent = recent_window_frame(store, NAME, loop.use_case, "7d")
    store.close()
    options = PromoteOptions(from_alias=version, recent=recent.frame, recent_name=recent.label)
    outcome = promote(NAME, loop.holdout, "department", options, policy=policy, settings=loop.settings)
    return outcome, next(v for v in outcome.verdicts if "recent 7d window" in v.gate)


def test_the_recent_window_gate_refuses_a_worse_challenger_and_too_few_labels(loop, retrained, small_requests):
    import registry
    from projects import train

    worse = train(loop.use_case, small_requests.subset(np.arange(60)), "logreg", {"char_ngrams": False, "C": 0.1},
                  settings=loop.settings)
    version = registry.register(worse.model_uri, NAME, settings=loop.settings).version
    refused, verdict = _promote(loop, version, {"window": "7d", "min_count": 20, "max_regression": 0.02})
    assert not refused.promoted and not verdict.passed
    assert verdict.figure < verdict.threshold and "labelled answers" in verdict.detail
    short, verdict = _promote(loop, version, {"window": "7d", "min_count": 100_000})
    assert not short.promoted and not verdict.passed and verdict.detail.startswith("not judged: ")
    assert registry.version_of(NAME, "champion", settings=loop.settings).version == loop.champion


def test_civicml_promote_passes_the_retrained_challenger_on_the_recent_window(loop, retrained, tmp_path, capsys):
    """`civicml promote` reads the recent window from the monitoring store when the policy names it."""
    import yaml

    import registry
    from app.cli import main

    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"min_value": None, "max_regression": 0.5, "holdout": {"rows": 200},
                                      "recent_window": {"window": "7d", "min_count": 20, "max_regression": 0.05}}))
    version = retrained[0]["version"]
    code = main(["promote", NAME, "--from", version, "--policy", str(policy), "--home", str(loop.home)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "PASS macro_f1 on the recent 7d window vs champion" in out and "labelled answers" in out
    assert registry.version_of(NAME, "champion", settings=loop.settings).version == version
    trail = registry.audit(NAME, settings=loop.settings)[-1]
    assert any("recent 7d window" in g["gate"] and g["passed"] for g in trail["gates"])


@pytest.mark.parametrize("args, says", [(["--window", "7x"], "window must look like"),
                                        (["--trials", "0"], "n_trials must be at least 1"),
                                        (["--set", "logreg.C=x:y"], "logreg.C")])
def test_cli_retrain_refuses_bad_arguments_in_one_line(loop, args, says, capsys):
    from app.cli import main
    from registry import versions

    before = len(versions(NAME, settings=loop.settings))
    assert main(["retrain", NAME, "--home", str(loop.home), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and says in err, err
    assert len(versions(NAME, settings=loop.settings)) == before


def test_the_loop_closes_labels_show_the_district_slipping_an_alert_is_audited_and_retraining_recovers_it(
        loop, retrained, tmp_path, capsys):
    """Issue 24's loop on the season: the labels fed back make live quality drop in the district where the new
    kind of complaint appeared; `civicml monitor` audits an alert for it; the retrained challenger answers that
    district's judging share (answers it never trained on) better than the champion did."""
    import mlflow.pyfunc
    import yaml

    import registry
    from app.cli import main
    from monitoring import open_store
    from monitoring.retrain import recent_window_frame

    district = "Riverside"  # SeasonSettings.new_kind_district
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"monitoring": {"window": "7d", "min_count": 20, "min_quality": 0.7}}))
    assert main(["monitor", NAME, "--home", str(loop.home), "--json", "--no-log", "--policy", str(policy)]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    live = pd.DataFrame(report["quality"])
    live = live[(live["group"] != "*") & ~live["estimate"].astype(bool) & (live["metric"] == "accuracy")]
    latest = live[live["window"] == live["window"].max()]
    assert latest.sort_values("value").iloc[0]["group"] == district  # the slipping district, from the labels
    alerts = [a for a in report["alerts"] if a["kind"] == "quality" and a["group"] == district]
    assert alerts, report["alerts"]
    audited = [r for r in registry.audit(NAME, settings=loop.settings) if r.get("action") == "alert"]
    assert any(r.get("group") == district or district in json.dumps(r) for r in audited)

    store = open_store(settings=loop.settings)
    judged = recent_window_frame(store, NAME, loop.use_case, "7d").frame
    store.close()
    rows = judged[judged["district"] == district]
    assert len(rows) >= 10

    def accuracy(version: str) -> float:
        model = mlflow.pyfunc.load_model(str(registry.resolve(NAME, version, settings=loop.settings).path))
        return float(np.mean(_labels(model.predict(rows[FEATURES])) == rows["department"].to_numpy()))

    before, after = accuracy(loop.champion), accuracy(retrained[0]["version"])
    assert after >= before + 0.1, (before, after)
