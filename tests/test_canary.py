"""Canary and shadow roll-outs from the registry, automatic rollback, zero failed requests across swaps."""

from __future__ import annotations

import asyncio
import shutil
import textwrap
import time

import pandas as pd
import pytest

import registry
from projects import get_use_case, train
from registry import rollout
from serving import Endpoint
from serving.codecs import MLflowCodec

NAME = "canary-router"
ROW = {"description": "Huge pothole on Oak Avenue", "district": "Midtown", "channel": "app", "hour": 8,
       "weekday": 1}
LAX = registry.PromotionPolicy(min_value=0.0, max_regression=1.0)

FAILING = textwrap.dedent('''
    import mlflow
    import numpy as np
    from mlflow.pyfunc import PythonModel


    class Failing(PythonModel):
        """Answers its input example (weekday 0, used for the warm-up) and fails on every other request."""

        def predict(self, context, model_input, params=None):
            if (model_input["weekday"] != 0).any():
                raise RuntimeError("injected failure")
            return np.asarray(["roads"] * len(model_input), dtype=object)


    mlflow.models.set_model(Failing())
''')


BROKEN = textwrap.dedent('''
    import mlflow
    from mlflow.pyfunc import PythonModel


    class Broken(PythonModel):
        def load_context(self, context):
            raise RuntimeError("this version cannot load")

        def predict(self, context, model_input, params=None):
            return model_input


    mlflow.models.set_model(Broken())
''')


@pytest.fixture(scope="module")
def store(tmp_path_factory, small_requests, requests_holdout):
    """Versions 1 and 2: the same logreg (1 is champion); version 3: a model that fails on real traffic."""
    import mlflow

    from civicml.settings import Settings

    folder = tmp_path_factory.mktemp("canary")
    settings = Settings.from_env(env={}, home=folder / "home", user="tester")
    result = train(get_use_case("service_requests"), small_requests, "logreg", settings=settings)
    registry.register(result.model_uri, NAME, settings=settings)
    assert registry.promote(NAME, requests_holdout.frame, "department", policy=LAX, settings=settings).promoted
    registry.register(result.model_uri, NAME, settings=settings)
    code = folder / "failing.py"
    code.write_text(FAILING)
    mlflow.set_tracking_uri(settings.tracking_uri)
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", python_model=str(code),
                                       input_example=pd.DataFrame([{**ROW, "weekday": 0}]))
    registry.register(info.model_uri, NAME, alias=None, settings=settings)
    code = folder / "broken.py"
    code.write_text(BROKEN)
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", python_model=str(code))
    registry.register(info.model_uri, NAME, alias=None, settings=settings)  # version 4
    return settings


def test_a_version_that_fails_to_load_leaves_the_old_one_serving(store):
    from fastapi.testclient import TestClient

    from serving import create_app

    registry.set_alias(NAME, "staging", "1", settings=store)
    endpoint = Endpoint(NAME, alias="staging", settings=store, refresh_seconds=0)
    with TestClient(create_app(endpoint, follow=False)) as client:
        registry.set_alias(NAME, "staging", "4", settings=store)
        assert endpoint.refresh() is False
        health = client.get("/health").json()
        assert health["model"]["version"] == "1" and "this version cannot load" in health["last_error"]
        answer = client.post("/invocations", json={"dataframe_records": [ROW]})
        assert answer.status_code == 200 and answer.json()["model"]["version"] == "1"
        assert "civicml_model_load_failures_total" in client.get("/metrics").text


def _ask(endpoint: Endpoint, n: int, row=ROW) -> list[str]:
    async def run():
        versions = []
        for _ in range(n):
            payload, _ = MLflowCodec.decode(f'{{"dataframe_records": [{pd.Series(row).to_json()}]}}'.encode(), None)
            output, served, _ = await endpoint.apredict(payload)
            assert list(output["label"]) == ["roads"]
            versions.append(served.version)
        return versions

    return asyncio.run(run())


def test_canary_split_follows_its_weight(store):
    endpoint = Endpoint(NAME, settings=store, refresh_seconds=0)
    endpoint.load()
    rollout.start(NAME, "2", 10, settings=store)
    try:
        endpoint.refresh_rollout()
        assert endpoint.rollout.weight == 10
        versions = _ask(endpoint, 2000)
        share = versions.count("2") / len(versions)
        assert abs(share - 0.10) <= 0.03, share
        assert set(versions) == {"1", "2"}
    finally:
        rollout.stop(NAME, settings=store)
    endpoint.refresh_rollout()
    assert endpoint.rollout is None and set(_ask(endpoint, 20)) == {"1"}
    actions = [r["action"] for r in registry.audit(NAME, settings=store)]
    assert actions[-2:] == ["canary", "rollout-stop"]
    endpoint.close()


def test_failing_canary_is_rolled_back_automatically_without_failed_requests(store):
    endpoint = Endpoint(NAME, settings=store, refresh_seconds=0)
    endpoint.load()
    rollout.start(NAME, "3", 50, max_error_rate=0.2, window=20, settings=store)
    endpoint.refresh_rollout()
    assert endpoint.rollout is not None and endpoint.rollout.version == "3"
    versions = _ask(endpoint, 200)  # every request answered (by the champion when the canary fails)
    assert set(versions) == {"1"}
    assert endpoint.rollout is None and "version 3: error rate" in endpoint.rolled_back
    last = _recorded_rollback(store)
    assert last["action"] == "rollout-stop" and last["automatic"] is True and "error rate" in last["reason"]
    endpoint.close()


def test_shadow_records_agreement_and_answers_from_the_champion(store):
    endpoint = Endpoint(NAME, settings=store, refresh_seconds=0)
    endpoint.load()
    rollout.start(NAME, "2", 100, mode="shadow", settings=store)
    try:
        endpoint.refresh_rollout()

        async def run():
            out = [await endpoint.apredict(MLflowCodec.decode(b'{"dataframe_records": [%s]}'
                                                              % pd.Series(ROW).to_json().encode(), None)[0])
                   for _ in range(20)]
            await asyncio.sleep(0.5)
            for _ in range(100):  # shadow calls finish in the background
                if endpoint.shadow_counts["total"] >= 20:
                    break
                await asyncio.sleep(0.05)
            return out

        answers = asyncio.run(run())
        assert {served.version for _, served, _ in answers} == {"1"}
        assert endpoint.shadow_counts == {"agree": 20, "total": 20}
    finally:
        rollout.stop(NAME, settings=store)
        endpoint.close()


def test_rollout_commands_check_their_input(store, capsys):
    from app.cli import main

    args = ["--home", str(store.home)]
    assert main(["canary", NAME, "--version", "2", "--weight", "150", *args]) == 2
    assert "percentage" in capsys.readouterr().err
    assert main(["canary", NAME, "--version", "99", *args]) == 2
    assert main(["canary", NAME, *args]) == 2
    assert rollout.current(NAME, settings=store) is None  # a failed command changes nothing stored
    assert main(["canary", NAME, "--version", "2", "--weight", "5", *args]) == 0
    assert rollout.current(NAME, settings=store).weight == 5
    assert main(["canary", NAME, "--stop", *args]) == 0
    assert rollout.current(NAME, settings=store) is None


SLOW = textwrap.dedent('''
    import time

    import mlflow
    import numpy as np
    from mlflow.pyfunc import PythonModel


    class Slow(PythonModel):
        """Right answers, slowly: 0.3 s a call except for its input example (weekday 0, the warm-up)."""

        def predict(self, context, model_input, params=None):
            if (model_input["weekday"] != 0).any():
                time.sleep(0.3)
            return np.asarray(["roads"] * len(model_input), dtype=object)


    mlflow.models.set_model(Slow())
''')


@pytest.fixture(scope="module")
def slow_version(store, tmp_path_factory):
    """A really registered version that answers correctly but passes any sensible p95 limit."""
    import mlflow

    code = tmp_path_factory.mktemp("slow") / "slow.py"
    code.write_text(SLOW)
    mlflow.set_tracking_uri(store.tracking_uri)
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", python_model=str(code),
                                       input_example=pd.DataFrame([{**ROW, "weekday": 0}]))
    return registry.register(info.model_uri, NAME, alias=None, settings=store).version


def test_slow_canary_is_rolled_back_on_p95_without_failed_requests(store, slow_version):
    endpoint = Endpoint(NAME, settings=store, refresh_seconds=0)
    endpoint.load()
    rollout.start(NAME, slow_version, 100, max_error_rate=0.5, max_p95_ms=100, window=8, settings=store)
    endpoint.refresh_rollout()
    assert endpoint.rollout is not None and endpoint.rollout.max_p95_ms == 100

    async def run():
        versions = []
        for _ in range(12):
            payload, _ = MLflowCodec.decode(b'{"dataframe_records": [%s]}' % pd.Series(ROW).to_json().encode(), None)
            _, served, _ = await endpoint.apredict(payload)  # raises on a failed request
            versions.append(served.version)
        return versions

    versions = asyncio.run(run())
    assert versions[:8] == [slow_version] * 8  # the canary answered (rightly, slowly) until its window was full
    assert set(versions[8:]) == {"1"}  # then the champion alone
    assert endpoint.rollout is None and f"version {slow_version}: p95" in endpoint.rolled_back
    assert "error rate" not in endpoint.rolled_back
    last = _recorded_rollback(store)
    assert last["action"] == "rollout-stop" and last["automatic"] is True
    assert last["version"] == slow_version and "p95" in last["reason"] and "limit 100 ms" in last["reason"]
    endpoint.close()


def _recorded_rollback(store) -> dict:
    """The audit record of an automatic rollback, once a background thread has removed the split and audited it."""
    deadline = time.monotonic() + 60
    while (rollout.current(NAME, settings=store) is not None
           or registry.audit(NAME, settings=store)[-1]["action"] != "rollout-stop"):
        assert time.monotonic() < deadline, "the rollback was not recorded"
        time.sleep(0.1)
    return registry.audit(NAME, settings=store)[-1]


def test_recorded_answers_name_the_arm_that_gave_them_as_the_champion_moves(store, requests_holdout, tmp_path):
    """``--record all`` behind a canary: each stored answer names the version that gave it and its arm (the
    canary's version is the canary, the champion's the champion); once the champion moves to the canary's
    version, that version's answers are the champion's (the server's cached arm follows the move)."""
    from fastapi.testclient import TestClient

    from app.cli.monitor import serving_recorder
    from civicml.settings import Settings
    from monitoring import open_store
    from serving import create_app

    home = tmp_path / "home"  # a home of its own: its records store is this test's alone
    shutil.copytree(store.home, home)
    settings = Settings.from_env(env={}, home=home, user="tester")
    endpoint = Endpoint(NAME, settings=settings, refresh_seconds=0)
    recorder, feedback = serving_recorder([NAME], "all", settings)
    ids: dict[str, list[str]] = {"before": [], "after": []}
    rollout.start(NAME, "2", 50, settings=settings)
    try:
        with TestClient(create_app(endpoint, follow=False, recorder=recorder, feedback=feedback)) as client:
            endpoint.refresh_rollout()
            for _ in range(40):
                answer = client.post("/invocations", json={"dataframe_records": [ROW]})
                assert answer.status_code == 200, answer.text
                ids["before"].append((answer.json()["answer_ids"][0], answer.json()["model"]["version"]))
            rollout.stop(NAME, settings=settings)
            registry.set_alias(NAME, "challenger", "2", settings=settings)
            assert registry.promote(NAME, requests_holdout.frame, "department", policy=LAX, settings=settings).promoted
            endpoint.refresh()
            endpoint.refresh_rollout()
            for _ in range(5):
                answer = client.post("/invocations", json={"dataframe_records": [ROW]})
                ids["after"].append((answer.json()["answer_ids"][0], answer.json()["model"]["version"]))
            for recording in recorder.recorders.values():
                recording.flush()
    finally:
        recorder.close()
    records = open_store(settings=settings)
    try:
        stored = records.read(model=NAME).set_index("answer_id")
    finally:
        records.close()
    before = {stored.loc[i, "version"]: stored.loc[i, "arm"] for i, _ in ids["before"]}
    assert {v for _, v in ids["before"]} == {"1", "2"} and before == {"1": "champion", "2": "canary"}
    assert {(stored.loc[i, "version"], stored.loc[i, "arm"]) for i, _ in ids["after"]} == {("2", "champion")}
    assert {v for _, v in ids["after"]} == {"2"}
