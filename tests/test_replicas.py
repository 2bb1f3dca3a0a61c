"""Replicas that agree: two `civicml serve` processes, each with its own home and cache, read one team registry
(`civicml server` on PostgreSQL, artifacts in moto's S3); both follow a canary roll-out and an alias move within
their refresh interval, and together split the traffic by the weight held in the registry.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import registry
from projects import get_use_case, train
from serving.routing import Split
from team_mode import free_port, moto_s3, stop_process, team_pg, team_server  # noqa: F401 - fixtures

NAME = "replica-router"
ROW = {"description": "Huge pothole on Oak Avenue", "district": "Midtown", "channel": "app", "hour": 8,
       "weekday": 1}
LAX = registry.PromotionPolicy(min_value=0.0, max_regression=1.0)
WEIGHT = 25.0
REQUESTS = 2000


def test_the_split_follows_the_weight_on_every_replica_and_every_subsequence():
    for weight in (1.0, 10.0, 12.5, 25.0, 50.0, 90.0):
        replicas = [Split(0.1), Split(0.7)]  # different starting points, as two processes have
        taken = [replicas[i % 2].take(weight) for i in range(REQUESTS)]  # round-robin over the two
        assert abs(sum(taken) - REQUESTS * weight / 100) <= 6, (weight, sum(taken))
        for replica in (taken[0::2], taken[1::2]):
            assert abs(sum(replica) - len(replica) * weight / 100) <= 3, (weight, sum(replica))
        one = Split(0.3)  # what one replica sends, one request in three of it (a pattern in the traffic)
        third = [one.take(weight) for _ in range(3 * REQUESTS)][::3]
        assert abs(sum(third) - REQUESTS * weight / 100) <= 6, (weight, sum(third))


@pytest.fixture(scope="module")
def team(team_server, small_requests, requests_holdout, tmp_path_factory):
    """Versions 1 (champion) and 2 (challenger) of one logreg, trained and registered through the team server."""
    settings = team_server.settings(tmp_path_factory.mktemp("replicas") / "home", user="tester")
    result = train(get_use_case("service_requests"), small_requests, "logreg", settings=settings)
    registry.register(result.model_uri, NAME, settings=settings)
    assert registry.promote(NAME, requests_holdout.frame, "department", policy=LAX, settings=settings).promoted
    registry.register(result.model_uri, NAME, settings=settings)
    return settings


def _start_replica(team_server, home: Path) -> tuple[str, subprocess.Popen]:
    """`civicml serve` from an empty folder with its own HOME and home, no MLFLOW_* or CIVICML_* variables."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CIVICML_", "AWS_"))}
    home.mkdir(parents=True)
    env["HOME"] = str(home)
    command = [str(Path(sys.executable).with_name("civicml")), "serve", NAME, "--tracking-uri", team_server.url,
               "--home", str(home / "civicml"), "--port", str(port), "--refresh", "0.5"]
    proc = subprocess.Popen(command, env=env, cwd=home, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    return f"http://127.0.0.1:{port}", proc


def _wait_for(replicas, check, what: str, timeout: float = 240.0) -> None:
    """Poll each replica's /health until ``check(health)`` holds on all of them (a generous bound, not a timing)."""
    deadline = time.monotonic() + timeout
    pending = dict(replicas)
    while pending:
        for url, proc in list(pending.items()):
            assert proc.poll() is None, f"replica {url} exited:\n{proc.stdout.read()[-3000:]}"
            try:
                if check(httpx.get(f"{url}/health", timeout=5).json()):
                    del pending[url]
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                pass
        assert time.monotonic() < deadline, f"{what}: not yet on {sorted(pending)}"
        time.sleep(0.2)


def _ask(clients: list[httpx.Client], n: int) -> list[tuple[int, str]]:
    """``n`` single-row requests sent round-robin to the replicas: (replica, the version that answered)."""
    answers = []
    for i in range(n):
        response = clients[i % len(clients)].post("/invocations", json={"dataframe_records": [ROW]})
        assert response.status_code == 200, response.text
        assert response.headers["X-CivicML-Model-Version"] == response.json()["model"]["version"]
        answers.append((i % len(clients), response.headers["X-CivicML-Model-Version"]))
    return answers


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.s3
def test_two_replicas_follow_the_registry_and_split_the_canary_by_its_weight(team_server, team, requests_holdout,
                                                                          tmp_path):
    replicas = dict(_start_replica(team_server, tmp_path / f"replica-{i}") for i in range(2))
    clients = [httpx.Client(base_url=url, timeout=30) for url in replicas]
    try:
        _wait_for(replicas, lambda h: h["model"]["version"] == "1", "serving the champion, version 1")

        registry.start_rollout(NAME, "2", WEIGHT, settings=team)
        _wait_for(replicas, lambda h: (h["rollout"] or {}).get("weight") == WEIGHT, "following the canary")
        answers = _ask(clients, REQUESTS)
        share = 100 * sum(v == "2" for _, v in answers) / REQUESTS
        assert abs(share - WEIGHT) <= 3, share
        for replica in range(2):  # each replica alone keeps to the weight too
            mine = [v for r, v in answers if r == replica]
            assert abs(100 * mine.count("2") / len(mine) - WEIGHT) <= 3
        assert {v for _, v in answers} == {"1", "2"}

        # the alias moves (a promotion): both replicas follow it, the canary of the new champion ends
        assert registry.promote(NAME, requests_holdout.frame, "department", policy=LAX, settings=team).promoted
        _wait_for(replicas, lambda h: h["model"]["version"] == "2" and h["rollout"] is None, "following the alias")
        assert {v for _, v in _ask(clients, 40)} == {"2"}
    finally:
        for client in clients:
            client.close()
        for proc in replicas.values():
            stop_process(proc)
