"""Ctrl-C that a finalizer drops still stops training and tuning (civicml.interrupts)."""

from __future__ import annotations

import signal
import threading

import mlflow
import optuna
import pytest

from civicml import interrupts

# the finalizer's dropped KeyboardInterrupt is what these tests are about
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture
def python_sigint():
    """Python's own SIGINT handler, as a command started from a terminal has it (a test runner may not)."""
    before = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


class _DropsCtrlC:
    """Ctrl-C arrives while its finalizer runs: Python prints "Exception ignored" and goes on."""

    def __del__(self):
        signal.raise_signal(signal.SIGINT)


def _drop_a_ctrl_c() -> None:
    _DropsCtrlC()  # no KeyboardInterrupt comes out of here


def test_a_ctrl_c_that_a_finalizer_drops_is_still_seen(python_sigint):
    with interrupts.catching():
        assert not interrupts.seen()
        interrupts.check()
        _drop_a_ctrl_c()
        assert interrupts.seen()
        with pytest.raises(KeyboardInterrupt):
            interrupts.check()
        with pytest.raises(KeyboardInterrupt):  # and Ctrl-C still raises where it lands
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler and not interrupts.seen()
    interrupts.check()  # outside, nothing is remembered


def test_catching_leaves_other_handlers_and_other_threads_alone(python_sigint):
    own = lambda signum, frame: None  # noqa: E731 (a server's own handler)
    signal.signal(signal.SIGINT, own)
    with interrupts.catching():
        assert signal.getsignal(signal.SIGINT) is own
    assert signal.getsignal(signal.SIGINT) is own
    signal.signal(signal.SIGINT, signal.default_int_handler)
    failures = []

    def off_main():
        try:
            with interrupts.catching():
                pass
        except Exception as err:  # signal.signal off the main thread raises ValueError
            failures.append(err)

    thread = threading.Thread(target=off_main)
    thread.start()
    thread.join()
    assert not failures and signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.slow
def test_training_that_a_dropped_ctrl_c_reached_ends_its_run_killed(python_sigint, requests_use_case,
                                                                     small_requests, settings):
    from projects import train

    with interrupts.catching():
        _drop_a_ctrl_c()
        with pytest.raises(KeyboardInterrupt):
            train(requests_use_case, small_requests, "boosting", {"max_iter": 20}, settings=settings,
                  run_name="stopped")
    client = mlflow.MlflowClient(settings.tracking_uri)
    experiment = client.get_experiment_by_name(requests_use_case.name)
    runs = client.search_runs([experiment.experiment_id])
    assert [(r.info.run_name, r.info.status) for r in runs] == [("stopped", "KILLED")]


@pytest.mark.slow
def test_a_study_that_a_dropped_ctrl_c_reached_stops_and_queues_the_trial_again(python_sigint, requests_use_case,
                                                                                small_requests, settings):
    from tuning import tune
    from tuning.runs import ATTR_REQUEUED

    with interrupts.catching():
        _drop_a_ctrl_c()
        with pytest.raises(KeyboardInterrupt):
            tune(requests_use_case, small_requests, n_trials=5, families=["logreg"], study_name="dropped",
                 settings=settings, seed=1)
    trials = optuna.load_study(study_name="dropped", storage=settings.optuna_storage).trials
    states = [t.state for t in trials]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING]
    assert trials[1].params == trials[0].params and trials[1].system_attrs[ATTR_REQUEUED] == 0
