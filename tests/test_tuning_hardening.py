"""Issue 10 in the Python API: parameters checked before anything is stored, a study in which no trial
completes is an error (and a new one leaves nothing behind), ties and Pareto-front trials keep their model,
Optuna sees named values and explained attributes, and tune() leaves MLflow's environment as it found it.

Real training (decision_tree, logreg on a few hundred 311 rows), real SQLite stores under a temporary home.
"""

from __future__ import annotations

import os

import mlflow
import optuna
import pytest

from civicml.errors import Failed, InvalidInput
from civicml.tags import TAG_MODEL_URI
from projects import Dataset
from projects.training import train
from tuning import parse_assignment, plan_study, tune
from tuning.runs import ATTR_FAILURE, ATTR_RUN


def _study(settings, name):
    from tuning.storage import open_storage

    return optuna.load_study(study_name=name, storage=open_storage(settings.optuna_storage))


@pytest.mark.parametrize("params, fragment", [
    ({"Cee": 3}, "family 'svm' has no parameter 'Cee'"),
    ({"C": "abc"}, "parameter 'C': expected a number, got 'abc'"),
    ({"C": True}, "parameter 'C': expected a number"),
    ({"C": -1.0}, "expected a positive number"),
    ({"kernel": "poly"}, "parameter 'kernel': expected one of ['linear', 'rbf']"),
    ({"char_ngrams": "yes"}, "parameter 'char_ngrams': expected one of [True, False]"),
])
def test_train_checks_parameters_against_the_declared_space_before_storing(requests_use_case, small_requests,
                                                                           settings, params, fragment):
    with pytest.raises(InvalidInput) as raised:
        train(requests_use_case, small_requests, "svm", params, settings=settings)
    assert fragment in str(raised.value)
    assert not settings.home.exists()  # nothing stored, not even the home folder


def test_checked_parameters_keep_their_declared_types(requests_use_case):
    family = requests_use_case.family("boosting")
    checked = family.check_params({"learning_rate": 1, "max_iter": 40.0, "char_ngrams": True})
    assert checked["learning_rate"] == 1.0 and isinstance(checked["learning_rate"], float)
    assert checked["max_iter"] == 40 and isinstance(checked["max_iter"], int)
    with pytest.raises(InvalidInput, match="'char_ngrams': expected true or false"):
        family.check_params({"char_ngrams": 1})  # a default-only parameter takes its default's type


@pytest.mark.parametrize("text, fragment", [
    ("svm.C=abc", "expected a number, got 'abc'"),
    ("svm.C=1,abc", "expected a number, got 'abc'"),
    ("svm.kernel=poly", "expected one of ['linear', 'rbf']"),
    ("svm.kernel=1:3", "not a range"),
    ("boosting.max_iter=20.5,40", "expected a whole number"),
])
def test_set_values_must_fit_the_declared_parameter(requests_use_case, text, fragment):
    spaces = {f: requests_use_case.family(f).space for f in requests_use_case.families}
    with pytest.raises(InvalidInput, match=None) as raised:
        parse_assignment(text, spaces)
    assert fragment in str(raised.value)


def test_space_file_overrides_must_fit_the_declared_parameter(requests_use_case, settings):
    from projects.space import Categorical, Float

    for override, fragment in (({"kernel": Categorical(["poly"])}, "expected one of"),
                               ({"kernel": Float(0.1, 1.0)}, "the parameter is a choice")):
        with pytest.raises(InvalidInput, match=fragment):
            plan_study(requests_use_case, families=["svm"], overrides={"svm": override}, settings=settings)
    with pytest.raises(InvalidInput, match="the parameter is a whole number"):
        plan_study(requests_use_case, families=["boosting"], settings=settings,
                   overrides={"boosting": {"max_iter": Float(20, 40)}})


@pytest.mark.parametrize("objectives, fragment", [
    ("foo:max", "objective 'foo': no training logs such a metric"),
    ("macro_f1:max,mae:min", "objective 'mae'"),  # a regression metric, on a classification use case
])
def test_unknown_objective_fails_before_anything_is_stored(requests_use_case, small_requests, settings,
                                                           objectives, fragment):
    with pytest.raises(InvalidInput) as raised:
        tune(requests_use_case, small_requests, n_trials=1, families=["logreg"], settings=settings,
             objectives=objectives)
    assert fragment in str(raised.value)
    assert not settings.home.exists()


def test_per_class_recall_is_a_known_objective(requests_use_case, settings):
    plan = plan_study(requests_use_case, objectives="macro_f1:max,recall_roads:max", settings=settings)
    assert [o.metric for o in plan.objectives] == ["macro_f1", "recall_roads"]


def _one_class(dataset: Dataset) -> Dataset:
    """The data set cut to its most common class: every classifier refuses to fit it (a real failure)."""
    top = dataset.y.value_counts().index[0]
    return dataset.subset(dataset.y.reset_index(drop=True).index[dataset.y.reset_index(drop=True) == top])


def test_a_new_study_with_no_complete_trial_is_an_error_and_leaves_nothing_behind(requests_use_case,
                                                                                  small_requests, settings):
    with pytest.raises(Failed) as raised:
        tune(requests_use_case, _one_class(small_requests), n_trials=1, families=["logreg"], study_name="empty",
             settings=settings)
    message = str(raised.value)
    assert "no trial of study 'empty' completed (trial 0 failed: ValueError: " in message
    assert "\n" not in message and "the study was removed" in message
    assert "empty" not in optuna.get_all_study_names(storage=settings.optuna_storage)
    client = mlflow.MlflowClient(tracking_uri=settings.tracking_uri)
    experiment = client.get_experiment_by_name(requests_use_case.name)
    assert client.search_runs([experiment.experiment_id]) == []  # parent and trial runs deleted


@pytest.mark.slow
def test_a_resumed_study_with_no_complete_trial_keeps_its_history(requests_use_case, small_requests, settings):
    broken = _one_class(small_requests)
    first = tune(requests_use_case, small_requests, n_trials=1, families=["logreg"], study_name="kept",
                 settings=settings, pruner="none")
    # a resumed study has a complete trial already: the new failures are reported in the counts, no error
    again = tune(requests_use_case, broken, n_trials=1, families=["logreg"], study_name="kept", settings=settings,
                 pruner="none")
    assert again.n_failed == 1 and again.best_trial == first.best_trial
    failed = [t for t in _study(settings, "kept").trials if t.state == optuna.trial.TrialState.FAIL]
    assert failed[0].user_attrs[ATTR_FAILURE].startswith("ValueError: ")


@pytest.mark.parametrize("objectives", [None, pytest.param("macro_f1:max,model_size_bytes:min",
                                                          marks=pytest.mark.slow)])
def test_ties_and_front_trials_keep_their_model_and_optuna_sees_named_values(requests_use_case, small_requests,
                                                                             settings, monkeypatch, objectives):
    """Two grid points that train the same tree (max_depth beyond the tree's own depth): the second ties the
    first; both must keep a model, in a single- and in a two-objective study. tune() also puts MLflow's
    environment back as it found it."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(name, raising=False)
    uri_before = mlflow.get_tracking_uri()
    spaces = {"decision_tree": requests_use_case.family("decision_tree").space}
    overrides = {"decision_tree": dict(parse_assignment(text, spaces)[1:] for text in (
        "decision_tree.max_depth=50,60", "decision_tree.min_samples_leaf=2", "decision_tree.criterion=gini",
        "decision_tree.char_ngrams=false"))}
    client = mlflow.MlflowClient(tracking_uri=settings.tracking_uri)
    for name in ("tie",):
        result = tune(requests_use_case, small_requests, n_trials=2, families=["decision_tree"], study_name=name,
                      sampler="grid", pruner="none", overrides=overrides, settings=settings, objectives=objectives)
        study = _study(settings, name)
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        assert len(complete) == 2 and complete[0].values == complete[1].values  # a tie
        for trial in complete:
            assert client.get_run(trial.user_attrs[ATTR_RUN]).data.tags.get(TAG_MODEL_URI), trial.number
        assert result.best_model_uri
        assert study.metric_names == ([o.split(":")[0] for o in result.objectives])
        worker = complete[0].user_attrs["worker"]
        assert set(worker) == {"invocation", "host", "pid", "process_start_ticks"}
        assert set(study.user_attrs) == {"objectives", "invocations", "wall_seconds", "mlflow_parent_run_id"}
    assert mlflow.get_tracking_uri() == uri_before
    assert "MLFLOW_TRACKING_URI" not in os.environ and "MLFLOW_EXPERIMENT_ID" not in os.environ


@pytest.mark.postgres
def test_workers_opening_a_new_postgresql_storage_at_once_all_get_it():
    """Each worker creates Optuna's tables on first contact; on a new database several do it at the same
    moment, and PostgreSQL refuses all but one (a unique violation in its catalogue). The others retry."""
    import threading

    from conftest import fresh_postgres_database
    from tuning.storage import open_storage

    for _ in range(3):
        with fresh_postgres_database("civicml_race") as url:
            start, opened, failed = threading.Barrier(4), [], []

            def worker():
                start.wait()
                try:
                    opened.append(open_storage(url))
                except Exception as err:  # noqa: BLE001 - collected and asserted below
                    failed.append(err)

            threads = [threading.Thread(target=worker) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=120)
            assert not failed and len(opened) == 4, failed
            optuna.create_study(study_name="raced", storage=opened[0])
            assert [s.study_name for s in optuna.get_all_study_summaries(opened[-1])] == ["raced"]
            for storage in opened:
                storage.remove_session()
                storage.engine.dispose()


def test_a_worker_keeps_the_heap_it_started_with_out_of_full_collections_and_gives_it_back():
    import gc

    from tuning.worker import _young_heap

    gc.unfreeze()  # what an earlier test in this process froze (a served model's heap) is given back first
    assert gc.get_freeze_count() == 0
    with _young_heap():
        assert gc.get_freeze_count() > 0  # what existed when the trials began
    assert gc.get_freeze_count() == 0  # given back: its cyclic garbage is collected again
    gc.freeze()  # a process that froze its own objects (a server after start-up) keeps them frozen
    try:
        frozen = gc.get_freeze_count()  # frozen objects may still be freed meanwhile (other threads): <=
        with _young_heap():
            assert 0 < gc.get_freeze_count() <= frozen  # not frozen again
        assert 0 < gc.get_freeze_count() <= frozen  # nor given back
    finally:
        gc.unfreeze()
