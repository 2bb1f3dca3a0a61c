"""serving.routing: the canary and shadow wrapper around any way of answering with one loaded version.

The router is given the answering function, as a batcher is given a runtime; here it is a small one in which
the candidate version either agrees with the champion or fails (the registered models of tests/test_canary.py
take the same paths through a real endpoint, the registry and its audit trail).
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
import pytest

from civicml.errors import InvalidInput
from registry.rollout import Rollout
from serving.endpoint import Loaded, Served
from serving.metrics import Metrics
from serving.routing import RolloutHooks, RolloutTally, RoutedModel

NAME = "routed"
CHAMPION = Loaded(Served(NAME, "1", "champion", "pyfunc"), runtime=None, validator=None, loaded_at=0.0)


def _candidate(mode: str) -> Loaded:
    return Loaded(Served(NAME, "2", mode, "pyfunc"), runtime=None, validator=None, loaded_at=0.0)


class Versions:
    """Answers ``roads`` for every row; the candidate fails with ``error`` when one is set."""

    def __init__(self, error: Exception | None = None):
        self.error = error
        self.calls = {"1": 0, "2": 0}

    async def __call__(self, loaded: Loaded, payload, params):
        self.calls[loaded.served.version] += 1
        if loaded.served.version == "2" and self.error is not None:
            raise self.error
        return np.asarray(["roads"] * len(payload), dtype=object), loaded.served, loaded


def _router(versions: Versions, rollout: Rollout, metrics: Metrics, stops: list) -> RoutedModel:
    hooks = RolloutHooks(event=lambda kind, **data: metrics.on_event(kind, {"model": NAME, **data}),
                         record_stop=stops.append, agree=lambda a, b: list(a) == list(b))
    return RoutedModel(versions, _candidate(rollout.mode), rollout, RolloutTally(), hooks)


def _ask(router: RoutedModel, n: int, settle=lambda: True) -> list[str]:
    async def run():
        answered = [(await router(CHAMPION, ["row"], None))[1].version for _ in range(n)]
        for _ in range(200):  # the shadow's calls finish in the background
            if settle():
                break
            await asyncio.sleep(0.01)
        return answered

    return asyncio.run(run())


def test_the_canary_answers_its_weight_of_requests():
    versions = Versions()
    router = _router(versions, Rollout("2", 25.0), Metrics(), [])
    answered = _ask(router, 2000)
    assert abs(answered.count("2") / 2000 - 0.25) <= 0.03
    assert versions.calls == {"1": answered.count("1"), "2": answered.count("2")}  # each request answered once
    router.update(Rollout("2", 100.0))  # the same version with a new weight (the registry changed it)
    assert set(_ask(router, 20)) == {"2"}


def test_a_failing_canary_is_answered_for_by_the_champion_then_stopped():
    metrics, stops = Metrics(), []
    versions = Versions(RuntimeError("injected failure"))
    router = _router(versions, Rollout("2", 100.0, max_error_rate=0.2, window=10), metrics, stops)
    assert set(_ask(router, 30)) == {"1"}  # no request failed
    assert versions.calls["2"] == 10  # the window filled, then the champion alone
    assert not router.active
    assert router.tally.rolled_back == ("version 2: error rate 100% over the last 10 requests (limit 20%); "
                                        "last failure: RuntimeError: injected failure")
    for _ in range(200):  # recorded from a background thread
        if stops:
            break
        time.sleep(0.01)
    assert stops == [f"automatic: {router.tally.rolled_back}"]
    assert 'civicml_automatic_rollbacks_total{model="routed",version="2"} 1.0' in metrics.render().decode()


def test_the_clients_own_input_error_is_raised_and_not_held_against_the_canary():
    versions = Versions(InvalidInput("column 'hour' must be numeric"))
    router = _router(versions, Rollout("2", 100.0, window=5), Metrics(), [])
    with pytest.raises(InvalidInput, match="must be numeric"):
        _ask(router, 1)
    assert versions.calls == {"1": 0, "2": 1} and len(router.window.results) == 0 and router.active


def test_shadow_agreement_is_counted_and_the_champion_answers():
    metrics = Metrics()
    router = _router(Versions(), Rollout("2", 100.0, mode="shadow"), metrics, [])
    assert set(_ask(router, 20, settle=lambda: router.tally.shadow["total"] >= 20)) == {"1"}
    assert router.tally.shadow == {"agree": 20, "total": 20} and router.tally.shadow_failures == 0
    assert 'civicml_shadow_comparisons_total{model="routed",outcome="agree"} 20.0' in metrics.render().decode()


def test_a_failing_shadow_is_logged_and_counted_not_swallowed(caplog):
    metrics, stops = Metrics(), []
    versions = Versions(RuntimeError("injected failure"))
    router = _router(versions, Rollout("2", 100.0, mode="shadow", max_error_rate=1.0, window=50), metrics, stops)
    with caplog.at_level(logging.WARNING, logger="civicml.serving"):
        answered = _ask(router, 12, settle=lambda: router.tally.shadow_failures >= 12)
    assert set(answered) == {"1"}  # clients never see the shadow
    assert router.tally.shadow_failures == 12 and router.tally.shadow == {"agree": 0, "total": 0}
    assert 'civicml_shadow_comparisons_total{model="routed",outcome="failed"} 12.0' in metrics.render().decode()
    warned = [r.getMessage() for r in caplog.records if "shadow version 2" in r.getMessage()]
    assert len(warned) == 12 and "RuntimeError: injected failure" in warned[0]
    assert router.active and stops == []  # within its limits (max error rate 100%): it keeps running
