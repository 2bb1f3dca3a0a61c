"""Tuning on one machine: search spaces, resume, pruning, plots, several objectives, the CLI and `mlflow run`.

Real training (logreg, decision_tree, boosting on a few hundred 311 rows), real
SQLite stores under a temporary home.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import optuna
import pytest

from app.cli import main
from civicml.errors import InvalidInput
from civicml.tags import TAG_ROLE, TAG_STUDY, TAG_TRIAL, TAG_TRIAL_STATE
from tuning import SelectionRule, grid, parse_assignment, tune

ROOT = Path(__file__).resolve().parents[1]
FAST = ["logreg", "decision_tree"]


def _client(settings):
    return mlflow.MlflowClient(tracking_uri=settings.tracking_uri)


def _children(settings, parent_id):
    client = _client(settings)
    parent = client.get_run(parent_id)
    return client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'", max_results=500)


# --- search spaces -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("content, expected", [
    ("svm: {C: {type: float, low: 10, high: 1}}", "low < high"),
    ("svm: {C: {type: flaot, low: 1, high: 10}}", "svm.C.type"),
    ("svm: {gamma: [1, 2]}", "has no parameter 'gamma'"),
    ("svm: [C, 1]\n", "must map parameter names"),
    ("svm: {C: {type: float, low: 1}}", "svm.C.high' is missing"),
    ("svm:\n  C: {type: float\n", "not valid YAML at line"),
])
def test_bad_search_space_file_is_one_line_and_exit_2(tmp_path, capsys, content, expected):
    space = tmp_path / "space.yaml"
    space.write_text(content)
    code = main(["tune", "--home", str(tmp_path / "home"), "--space", str(space), "--show-space"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("civicml: error: ") and expected in err


def test_show_space_prints_ranges_log_scale_and_choices_after_overrides(tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("decision_tree: {criterion: [gini]}\n")
    code = main(["tune", "--home", str(tmp_path), "--families", "svm,decision_tree", "--space", str(space),
                 "--set", "svm.C=0.1:10:log", "--set", "decision_tree.max_depth=2:20:step=2", "--show-space"])
    out = capsys.readouterr().out
    assert code == 0
    assert "family: one of ['svm', 'decision_tree']" in out
    assert "svm.C: float [0.1, 10] log   (overridden)" in out
    assert "svm.kernel: one of ['linear', 'rbf']" in out
    assert "decision_tree.max_depth: int [2, 20] step 2   (overridden)" in out
    assert "decision_tree.criterion: one of ['gini']   (overridden)" in out


def test_set_assignments_keep_the_declared_type_and_reject_unknown_names(requests_use_case):
    spaces = {"svm": requests_use_case.family("svm").space, "decision_tree": requests_use_case.family("decision_tree").space}
    assert parse_assignment("svm.C=1:10", spaces)[2].__class__.__name__ == "Float"
    assert parse_assignment("svm.kernel=linear", spaces)[2].choices == ("linear",)
    assert parse_assignment("decision_tree.max_depth=4,8,16", spaces)[2].choices == (4, 8, 16)
    for bad, words in [("svm.gamma=1:2", "no parameter 'gamma'"), ("knn.k=3", "no model family 'knn'"),
                       ("svm.C", "FAMILY.PARAM=SPEC"), ("svm.C=5:1", "low < high"), ("svm.C=1:5:cubic", "LOW:HIGH")]:
        with pytest.raises(InvalidInput, match=words):
            parse_assignment(bad, spaces)


def test_grid_needs_finite_values(requests_use_case):
    with pytest.raises(InvalidInput, match="logreg.C' is a float range"):
        grid(requests_use_case.family("logreg").space, prefix="logreg.")
    space = {**requests_use_case.family("decision_tree").space}
    from projects.space import Categorical, Int

    space.update(max_depth=Categorical([4, 8]), min_samples_leaf=Int(1, 3))
    assert len(grid(space)["min_samples_leaf"]) == 3


def test_selection_rule_parsing():
    assert str(SelectionRule.parse(None)) == "knee"
    rule = SelectionRule.parse("latency_p95_ms<=5,model_size_bytes<=2e6")
    assert rule.kind == "best" and [str(c) for c in rule.constraints] == ["latency_p95_ms<=5",
                                                                        "model_size_bytes<=2e+06"]
    with pytest.raises(InvalidInput, match="METRIC<=NUMBER"):
        SelectionRule.parse("latency < 5")


# --- studies -----------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_resume_adds_trials_under_the_same_parent_run(requests_use_case, small_requests, settings):
    first = tune(requests_use_case, small_requests, n_trials=3, families=FAST, study_name="resume", settings=settings, seed=1)
    second = tune(requests_use_case, small_requests, n_trials=2, families=FAST, study_name="resume", settings=settings, seed=1)
    assert second.parent_run_id == first.parent_run_id
    assert (first.n_trials, second.n_trials) == (3, 5)
    assert second.n_complete + second.n_pruned == 5
    client = _client(settings)
    parent = client.get_run(first.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags[TAG_STUDY] == "resume" and parent.data.tags[TAG_ROLE] == "study"
    for key in ("civicml.storage_kind", "civicml.sampler", "civicml.pruner", "civicml.direction",
                "civicml.best_params", "civicml.best_trial"):
        assert key in parent.data.tags
    assert parent.data.tags["civicml.storage_kind"] == "sqlite"
    assert parent.data.metrics["n_trials"] == 5 and "wall_seconds" in parent.data.metrics
    assert parent.data.metrics["best_value"] == pytest.approx(second.best_value)
    studies = client.search_runs([parent.info.experiment_id], filter_string=f"tags.`{TAG_ROLE}` = 'study'")
    assert len(studies) == 1
    children = _children(settings, first.parent_run_id)
    assert sorted(int(r.data.tags[TAG_TRIAL]) for r in children) == [0, 1, 2, 3, 4]
    for run in children:
        assert run.data.tags[TAG_TRIAL_STATE] in ("COMPLETE", "PRUNED")
        assert "trial_seconds" in run.data.metrics and "valid_macro_f1" in run.data.metrics
        assert run.data.params["family"] in FAST
    best = next(r for r in children if r.info.run_id == second.best_run_id)
    assert best.data.metrics["macro_f1"] == pytest.approx(second.best_value)
    assert second.best_model_uri and second.best_params["family"] in FAST
    artifacts = {a.path for a in client.list_artifacts(first.parent_run_id, "plots")}
    assert {"plots/optimization_history.png", "plots/param_importances.png",
            "plots/parallel_coordinate.png"} <= artifacts
    assert "trials.json" in {a.path for a in client.list_artifacts(first.parent_run_id)}


@pytest.mark.slow
def test_pruned_trial_is_tagged_and_keeps_its_curve(requests_use_case, small_requests, settings):
    storage = settings.optuna_storage
    settings.ensure_home()
    study = optuna.create_study(study_name="prune", storage=storage, direction="maximize")
    fixed = {"boosting.max_iter": 60, "boosting.max_leaf_nodes": 8, "boosting.components": 32}
    for lr in (0.5, 0.45, 0.4, 0.001):  # three good learners, then one that cannot keep up
        study.enqueue_trial({**fixed, "boosting.learning_rate": lr})
    result = tune(requests_use_case, small_requests, n_trials=4, families=["boosting"], study_name="prune", storage=storage,
                  pruner="median", settings=settings)
    trials = optuna.load_study(study_name="prune", storage=storage).trials
    assert [t.state.name for t in trials][:3] == ["COMPLETE"] * 3
    assert trials[3].state == optuna.trial.TrialState.PRUNED and result.n_pruned == 1
    run = _client(settings).get_run(trials[3].user_attrs["run_id"])
    assert run.info.status == "KILLED"
    assert run.data.tags["civicml.pruned"] == "true" and run.data.tags[TAG_TRIAL_STATE] == "PRUNED"
    curve = _client(settings).get_metric_history(run.info.run_id, "valid_macro_f1")
    assert [m.step for m in curve] == [0, 1]  # pruned at stage 1 of 3, its curve up to there kept
    done = _client(settings).get_run(trials[0].user_attrs["run_id"])
    assert len(_client(settings).get_metric_history(done.info.run_id, "valid_macro_f1")) == 3


@pytest.mark.slow
def test_multi_objective_pareto_front_and_declared_choice(requests_use_case, small_requests, settings):
    result = tune(requests_use_case, small_requests, n_trials=6, families=FAST, study_name="pareto", settings=settings,
                  objectives="macro_f1:max,latency_p95_ms:min", sampler="nsga2", latency_rows=15, seed=2)
    assert result.objectives == ["macro_f1:max", "latency_p95_ms:min"]
    assert result.best_trial in result.pareto_front and result.selection_rule == "knee"
    assert result.best_model_uri  # a front trial always has its model logged
    client = _client(settings)
    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags["civicml.direction"] == "maximize,minimize"
    assert parent.data.tags["civicml.pruner"] == "none"
    assert json.loads(parent.data.tags["civicml.pareto_front"]) == result.pareto_front
    names = {a.path for a in client.list_artifacts(result.parent_run_id)} | \
        {a.path for a in client.list_artifacts(result.parent_run_id, "plots")}
    assert {"pareto_front.json", "plots/pareto_front.png"} <= names
    table = json.loads(Path(client.download_artifacts(result.parent_run_id, "pareto_front.json")).read_text())
    rows = dict(zip(table["columns"], zip(*table["data"])))
    assert sorted(rows["trial"]) == result.pareto_front
    assert [t for t, c in zip(rows["trial"], rows["chosen"]) if c] == [result.best_trial]
    chosen = client.get_run(result.best_run_id)
    assert chosen.data.metrics["latency_p95_ms"] == pytest.approx(result.best_values[1])
    assert chosen.data.metrics["latency_p95_ms"] > 0

    # the same front, another declared rule: the best macro-F1 within a latency budget that the whole
    # front meets (latencies are measured, so a tighter budget could exclude a re-measured front)
    budget = max(float(v) for v in rows["latency_p95_ms"]) * 1.5
    again = tune(requests_use_case, small_requests, n_trials=1, families=FAST, study_name="pareto", settings=settings,
                 objectives="macro_f1:max,latency_p95_ms:min", sampler="nsga2", latency_rows=15,
                 select=f"latency_p95_ms<={budget}")
    assert again.best_trial in again.pareto_front
    assert again.best_values[1] <= budget
    assert again.selection_rule.startswith("best")


@pytest.mark.slow
def test_grid_sampler_stops_when_the_grid_is_used_up(requests_use_case, small_requests, settings):
    overrides = {"decision_tree": {"max_depth": parse_assignment("decision_tree.max_depth=4,12", {
        "decision_tree": requests_use_case.family("decision_tree").space})[2]}}
    from projects.space import Categorical

    overrides["decision_tree"].update(min_samples_leaf=Categorical([2]), char_ngrams=Categorical([False]),
                                      class_weight=Categorical([None]))
    result = tune(requests_use_case, small_requests, n_trials=10, families=["decision_tree"], study_name="grid", sampler="grid",
                  pruner="none", overrides=overrides, settings=settings)
    assert result.n_trials == 4  # max_depth x criterion
    combos = {(p["decision_tree.max_depth"], p["decision_tree.criterion"])
              for p in optuna.load_study(study_name="grid", storage=settings.optuna_storage).trials
              for p in [p.params]}
    assert combos == {(4, "gini"), (4, "entropy"), (12, "gini"), (12, "entropy")}


def test_several_workers_on_sqlite_are_refused(requests_use_case, small_requests, settings):
    with pytest.raises(InvalidInput, match="SQLite storage cannot take 2 parallel workers"):
        tune(requests_use_case, small_requests, n_trials=2, families=FAST, settings=settings, workers=2)


@pytest.mark.slow
def test_cli_json_summary_and_registration(tmp_path, capsys):
    code = main(["tune", "--home", str(tmp_path), "--rows", "400", "--n-trials", "2", "--families", "logreg",
                 "--study", "cli", "--json"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0
    assert summary["study_name"] == "cli" and summary["n_complete"] + summary["n_pruned"] == 2
    assert summary["registered"]["version"] == "1" or summary["registered"]["version"] == 1
    # the champion of a study gets the same card as `civicml register` gives: rules fitted to the model's own
    # answers on the held-out set, with their fidelity, and the charts and map read back through the registry
    fidelity = float(summary["registered"]["rules_fidelity"])
    assert 0.5 <= fidelity <= 1.0
    from civicml.settings import Settings
    from registry.rules import insight_file

    settings = Settings.from_env(env={}, home=tmp_path)
    rules = insight_file(summary["registered"]["name"], "1", "rules.md", settings=settings).decode()
    assert "if " in rules.lower() and f"{fidelity}"[:4] in rules
    assert insight_file(summary["registered"]["name"], "1", "map.png", settings=settings)[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_a_bad_holdout_file_stops_tune_before_any_trial(tmp_path, capsys):
    bad = tmp_path / "held.csv"
    bad.write_text("nothing,useful\n1,2\n")
    code = main(["tune", "--home", str(tmp_path / "home"), "--rows", "200", "--n-trials", "1", "--families",
                 "decision_tree", "--holdout", str(bad)])
    err = capsys.readouterr().err
    assert code == 2 and "civicml:" in err and "Traceback" not in err
    assert "held.csv" in err
    assert not (tmp_path / "home" / "optuna.db").exists() and not (tmp_path / "home" / "mlflow.db").exists()


@pytest.mark.slow
def test_mlflow_run_tune_entry_point(tmp_path):
    env = {**os.environ, "CIVICML_HOME": str(tmp_path / "home"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    (tmp_path / "home").mkdir()
    mlflow_bin = str(Path(sys.executable).parent / "mlflow")
    cmd = [mlflow_bin, "run", str(ROOT), "-e", "tune", "-P", "rows=400", "-P", "n_trials=2", "-P", "study=mlrun",
           "--env-manager", "local", "--experiment-name", "service_requests"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("service_requests")
    studies = client.search_runs([exp.experiment_id], filter_string=f"tags.`{TAG_ROLE}` = 'study'")
    assert len(studies) == 1 and studies[0].info.status == "FINISHED"
    trials = _children_by_client(client, exp.experiment_id, studies[0].info.run_id)
    assert len(trials) == 2
    launcher = client.search_runs([exp.experiment_id], filter_string="tags.`civicml.study_run_id` != ''")
    assert launcher and launcher[0].data.tags["civicml.study_run_id"] == studies[0].info.run_id
    assert launcher[0].info.status == "FINISHED"


def _children_by_client(client, exp_id, parent_id):
    return client.search_runs([exp_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'")


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_the_interrupted_trial_runs_first_on_resume(tmp_path):
    import signal

    from tuning.runs import ATTR_REQUEUED, ATTR_RUN
    from tuning.storage import open_storage

    args, settings, proc, fitting = _cli_study_training_a_model(tmp_path, "ctrl-c")
    proc.send_signal(signal.SIGINT)
    out, err = _ended(proc, timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert err.strip().splitlines()[-1] == "civicml: interrupted"
    assert "Traceback" not in err and "KeyboardInterrupt" not in err

    study = optuna.load_study(study_name="ctrl-c", storage=open_storage(settings.optuna_storage))
    stopped = next(t for t in study.trials if t.state == optuna.trial.TrialState.FAIL)
    assert stopped.number >= fitting.number and len(study.trials) < 30
    waiting = [t for t in study.trials if t.state == optuna.trial.TrialState.WAITING]
    assert len(waiting) == 1 and waiting[0].params == stopped.params
    assert waiting[0].system_attrs[ATTR_REQUEUED] == stopped.number
    client = _client(settings)
    assert client.get_run(stopped.user_attrs[ATTR_RUN]).info.status == "KILLED"
    parents = client.search_runs([client.get_run(stopped.user_attrs[ATTR_RUN]).info.experiment_id],
                                 filter_string=f"tags.`{TAG_ROLE}` = 'study'")
    assert len(parents) == 1 and parents[0].info.status == "KILLED"

    # resuming runs the interrupted parameters first, under the same parent run, which ends FINISHED
    code = main([*args, "--n-trials", "1"])
    assert code == 0
    study = optuna.load_study(study_name="ctrl-c", storage=open_storage(settings.optuna_storage))
    rerun = study.trials[waiting[0].number]
    assert rerun.state == optuna.trial.TrialState.COMPLETE and rerun.params == stopped.params
    assert not [t for t in study.trials if t.state in (optuna.trial.TrialState.WAITING,
                                                       optuna.trial.TrialState.RUNNING)]
    parent = client.get_run(parents[0].info.run_id)
    assert parent.info.status == "FINISHED"
    assert client.get_run(rerun.user_attrs[ATTR_RUN]).data.tags["mlflow.parentRunId"] == parent.info.run_id


@pytest.mark.slow
def test_killed_process_on_sqlite_fails_its_trial_and_run_and_the_resume_retries_it(tmp_path):
    """SQLite studies have no heartbeats: the trial names its process, which a resumed study finds gone."""
    import signal

    from tuning.runs import ATTR_RUN

    args, settings, proc, victim = _cli_study_training_a_model(tmp_path, "killed")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    client = _client(settings)
    assert client.get_run(victim.user_attrs[ATTR_RUN]).info.status == "RUNNING"  # nobody left to end it

    assert main([*args, "--n-trials", "1"]) == 0  # the retry alone: it runs first
    study = optuna.load_study(study_name="killed", storage=settings.optuna_storage)
    dead = study.trials[victim.number]
    assert dead.state == optuna.trial.TrialState.FAIL
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retries) == 1 and retries[0].state == optuna.trial.TrialState.COMPLETE
    assert retries[0].params == victim.params
    run = client.get_run(victim.user_attrs[ATTR_RUN])
    assert run.info.status == "FAILED" and run.data.tags["civicml.trial_state"] == "FAIL"
    assert "worker process is gone" in run.data.tags["civicml.failure"]
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    # the killed process's earlier trials, whose run ends it had not written yet, were ended by the resume
    statuses = {t.number: client.get_run(t.user_attrs[ATTR_RUN]).info.status for t in study.trials
                if t.state == optuna.trial.TrialState.COMPLETE}
    assert set(statuses.values()) == {"FINISHED"}, statuses


def _ended(proc: subprocess.Popen, timeout: float) -> tuple[str, str]:
    """The process's output once it ends; one still running after ``timeout`` is killed (not left to run its
    trials beside the rest of the suite) and the test fails with what it printed."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"still running {timeout:.0f} s after Ctrl-C:\n{err[-3000:]}") from None


def _as_from_a_terminal() -> None:
    """In the child before exec: Ctrl-C as a terminal delivers it. A test process can hold SIGINT blocked or
    ignored (multiprocessing blocks it in the calling thread while it starts its resource tracker; a child
    started meanwhile inherits the mask), and a child that inherits that never sees the signal."""
    import signal

    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cli_study_training_a_model(tmp_path, study_name, timeout=180):
    """`civicml tune` started in its own process on a long study (slow boosting trials), once a trial of it is
    seen training a model (RUNNING, with its run). Returns the CLI arguments without --n-trials, the settings,
    the process and that trial."""
    import time

    from civicml.settings import Settings
    from tuning.runs import ATTR_RUN
    from tuning.storage import open_storage

    home = tmp_path / "home"
    args = ["tune", "--home", str(home), "--rows", "400", "--families", "boosting", "--pruner", "none",
            "--set", "boosting.max_iter=80", "--study", study_name, "--no-register"]
    cli = [sys.executable, "-c", "import sys; from app.cli import main; sys.exit(main(sys.argv[1:]))"]
    proc = subprocess.Popen([*cli, *args, "--n-trials", "30"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
                            preexec_fn=_as_from_a_terminal)
    settings = Settings.from_env(env={}, home=home)
    storage, deadline = None, time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
        try:
            storage = storage or open_storage(settings.optuna_storage)
            study = optuna.load_study(study_name=study_name, storage=storage)
        except (KeyError, InvalidInput):
            continue  # not created yet
        for trial in study.get_trials(states=(optuna.trial.TrialState.RUNNING,)):
            if trial.user_attrs.get(ATTR_RUN):
                return args, settings, proc, trial
    proc.kill()  # (a no-op if it ended by itself)
    raise AssertionError(f"no trial started: {proc.communicate()[1][-3000:]}")
