"""Alerts as audited events: the policy's monitoring: section, each crossed threshold audited once, POSTed to a
webhook (a real server on 127.0.0.1), the monitoring run's charts and maps, the console's Live section, and
`civicml monitor` in a fresh process; against a real registered 311 router and recorded traffic."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from civicml.errors import InvalidInput
from test_recording import _civicml

pytest_plugins = ["explained_model"]  # one session fixture for every module that uses it
NAME = "watched-router"  # registered here from the explained router's run, so its trail and records are ours
DISTRICTS = ("Northside", "Riverside", "Old Town", "Midtown")
FORTNIGHT = 14 * 86400
START = pd.Timestamp("1970-01-05", tz="UTC").timestamp() + 1450 * FORTNIGHT  # 2025-07-28, a 14-day window's start


@pytest.fixture(scope="module")
def watched(explained_model):
    """``NAME`` registered, and two weeks of its answers recorded with their outcomes: 40 per district and
    week, right 95% of the time except in Riverside (half)."""
    import registry
    from monitoring import AnswerRecord, add_feedback, new_answer_id, open_store

    settings = explained_model.settings
    if NAME not in registry.models(settings=settings):
        registry.register(explained_model.version.source, NAME, settings=settings)
    local = registry.resolve(NAME, "1", settings=settings)
    background = pd.read_parquet(Path(local.path) / "explain" / "background.parquet")
    rng = np.random.default_rng(7)
    records, outcomes = [], []
    for week in range(2):
        for district in DISTRICTS:
            for i in range(40):
                row = background.iloc[int(rng.integers(len(background)))].to_dict()
                inputs = {**{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}, "district": district}
                wrong = rng.random() < (0.5 if district == "Riverside" else 0.05)
                answer_id = new_answer_id()
                records.append(AnswerRecord(answer_id=answer_id, model=NAME, version="1", inputs=inputs,
                                            answer="roads", confidence=0.9, latency_ms=2.0, group=district,
                                            time=START + week * 7 * 86400 + rng.uniform(0, 7 * 86400)))
                outcomes.append((answer_id, "water" if wrong else "roads"))
    store = open_store(settings=settings)
    try:
        store.write(records)
        add_feedback(store, outcomes)
    finally:
        store.close()  # no connection of this process outlives its use: `civicml monitor` runs beside it
    return settings


class _Webhook(BaseHTTPRequestHandler):
    received: list = []
    status = 200

    def do_POST(self):  # noqa: N802 - the standard library's name
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        type(self).received.append((self.path, self.headers.get("content-type"), json.loads(body)))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    received = []
    handler = type("Hook", (_Webhook,), {"received": received})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hooks/s3cr3t-token", received
    server.shutdown()
    server.server_close()


def _report(settings, **policy):
    from app.cli.monitor import _reference
    from monitoring import monitor, open_store
    from registry import MonitoringPolicy

    policy = MonitoringPolicy(min_quality=0.8, **policy)
    _, reference = _reference(NAME, settings)
    store = open_store(settings=settings)
    try:
        return monitor(store, reference, policy=policy, model=NAME), policy
    finally:
        store.close()


def _alerts(settings) -> list[dict]:
    from registry import alerts_of, audit

    return alerts_of(audit(NAME, settings=settings))


# -- the policy ----------------------------------------------------------------------------------
def test_the_monitoring_section_is_a_field_of_the_promotion_policy(tmp_path):
    from monitoring import MonitoringPolicy as FromMonitoring
    from registry import MonitoringPolicy, PromotionPolicy

    assert FromMonitoring is MonitoringPolicy  # one class, the registry's
    path = tmp_path / "policy.yaml"
    path.write_text("monitoring:\n  min_quality: 0.85\n  webhook: https://hooks.example.org/a/b?token=x\n"
                    "  record: sample=0.25\n  window: 1d\n")
    policy = PromotionPolicy.from_yaml(path)
    assert (policy.monitoring.min_quality, policy.monitoring.record, policy.monitoring.window) == (0.85, "sample=0.25",
                                                                                                 "1d")
    assert policy.to_record()["monitoring"]["webhook"] == "https://hooks.example.org/..."  # no token in records
    assert PromotionPolicy().monitoring == MonitoringPolicy() and "monitoring" not in PromotionPolicy().to_record()
    for text, match in (("monitoring:\n  min_qualty: 0.8\n", r"unknown field 'min_qualty' \(did you mean 'min_quality'"),
                        ("monitoring:\n  webhook: ftp://x\n", "field 'webhook' must be an http"),
                        ("monitoring:\n  record: sometimes\n", "record policy must be off, all or sample=R"),
                        ("monitoring:\n  min_count: many\n", "field 'min_count' must be a whole number"),
                        ("monitorin: {}\n", "did you mean 'monitoring'")):
        path.write_text(text)
        with pytest.raises(InvalidInput, match=match) as err:
            PromotionPolicy.from_yaml(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_serve_records_what_the_governing_policy_says_unless_told(watched):
    import hashlib

    from app.cli.monitor import record_policies
    from civicml.tags import TAG_POLICY, TAG_POLICY_SHA256, TAG_POLICY_SOURCE
    from registry import ModelStore

    assert record_policies([NAME], None, watched) == {NAME: "off"}  # the built-in policy records nothing
    text = "monitoring:\n  record: sample=0.25\n"  # as registration records a project's policy with the model
    store = ModelStore(watched)
    store.set_model_tag(NAME, TAG_POLICY, text)
    store.set_model_tag(NAME, TAG_POLICY_SHA256, hashlib.sha256(text.encode()).hexdigest())
    store.set_model_tag(NAME, TAG_POLICY_SOURCE, "policy.yaml")
    assert record_policies([NAME], None, watched) == {NAME: "sample=0.25"}
    assert record_policies([NAME], "ALL", watched) == {NAME: "all"}  # --record given wins
    with pytest.raises(InvalidInput, match="record policy must be off, all or sample=R"):
        record_policies([NAME], "sometimes", watched)


# -- alerts audited once, and sent ---------------------------------------------------------------
def test_an_alert_is_audited_once_across_two_monitor_runs(watched, tmp_path, capsys):
    from app.cli import main
    from monitoring import audit_alerts

    report, policy = _report(watched)
    quality = [a for a in report.alerts if a.kind == "quality"]
    assert {a.group for a in quality} >= {"Riverside"} and "Midtown" not in {a.group for a in quality}
    first = audit_alerts(report, policy, watched)
    trail = _alerts(watched)
    keys = [r["alert_key"] for r in trail]
    assert len(keys) == len(set(keys)) and len(first.audited) + first.already == len(report.alerts)
    riverside = next(r for r in trail if r["group"] == "Riverside" and r["kind"] == "quality")
    assert riverside["action"] == "alert" and riverside["who"] == "tester" and riverside["threshold"] == 0.8
    assert riverside["version"] == "1" and riverside["arm"] == "champion" and riverside["thresholds"]["min_quality"] == 0.8
    thresholds = tmp_path / "policy.yaml"
    thresholds.write_text("monitoring:\n  min_quality: 0.8\n  window: 1w\n")  # 1w is 7d: the same windows
    assert main(["monitor", NAME, "--policy", str(thresholds), "--home", str(watched.home), "--json", "--no-log"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["audit"] == {"audited": 0, "already_audited": len(report.alerts), "delivery": None}
    assert again["run_id"] is None and len(again["alerts"]) == len(report.alerts)
    assert len(_alerts(watched)) == len(trail)


def test_new_alerts_are_posted_to_the_webhook_and_a_dead_one_is_recorded(watched, webhook):
    from monitoring import audit_alerts

    url, received = webhook
    report, policy = _report(watched, window="2w", webhook=url)  # another window length: alerts of their own
    audited = audit_alerts(report, policy, watched)
    assert audited.audited and audited.delivery == {"webhook": url.split("/hooks")[0] + "/...", "status": 200}
    [(path, kind, body)] = received
    assert path == "/hooks/s3cr3t-token" and kind == "application/json"
    assert body["model"] == NAME and {a["alert_key"] for a in body["alerts"]} == \
        {r["alert_key"] for r in audited.audited}
    assert all("s3cr3t" not in json.dumps(r) for r in audited.audited)  # the webhook's path is not recorded

    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/hook"
    report, policy = _report(watched, window="4w", webhook=dead)
    refused = audit_alerts(report, policy, watched)
    assert refused.audited and "ConnectError" in refused.delivery["error"]
    assert all(r["delivery"]["error"] for r in refused.audited)
    assert len(received) == 1  # nothing new reached the live one


# -- the monitoring run --------------------------------------------------------------------------
def test_the_monitoring_run_holds_the_report_charts_and_maps(watched):
    from civicml.tracking import tracking_client
    from monitoring import latest_run, log_report
    from registry import boundaries_for, versions

    report, policy = _report(watched)
    tags = dict(versions(NAME, settings=watched)[-1].tags)
    run_id = log_report(report, watched, metric=policy.metric, boundaries=boundaries_for(tags))
    client = tracking_client(watched)
    files = {f.path for f in client.list_artifacts(run_id)}
    assert {"report.json", "districts.json", "quality.png", "drift.png", "map_quality.png", "map_drift.png"} <= files
    for png in ("quality.png", "map_quality.png"):
        assert Path(client.download_artifacts(run_id, png, str(Path.cwd()))).read_bytes()[:4] == b"\x89PNG"
    districts = json.loads(Path(client.download_artifacts(run_id, "districts.json", str(Path.cwd()))).read_text())
    assert districts["quality"]["Riverside"] < 0.8 < districts["quality"]["Midtown"]
    run = client.get_run(run_id)
    assert run.data.params["model"] == NAME and run.data.metrics["records"] == report.records
    assert latest_run(NAME, watched).info.run_id == run_id


def test_the_console_model_page_shows_the_live_section_and_the_alerts(watched):
    from fastapi.testclient import TestClient

    from app.console import create_console
    from monitoring import audit_alerts, log_report

    report, policy = _report(watched)
    log_report(report, watched, metric=policy.metric)
    audit_alerts(report, policy, watched)
    with TestClient(create_console(watched)) as client:
        page = client.get(f"/models/{NAME}")
    assert page.status_code == 200
    text = page.text
    live = text[text.index('id="watch-h"'):text.index('id="gates-h"')]
    assert "recorded answers" in live and 'id="watch-quality"' in live and "data:image/png;base64," in live
    assert 'id="watch-districts"' in live and "Riverside" in live
    assert 'id="watch-alerts"' in live and "in Riverside" in live and "is under 0.8" in live


# -- the command, in a fresh process -------------------------------------------------------------
def test_cli_monitor_audits_an_alert_from_an_empty_folder(explained_model, watched, tmp_path):
    work = tmp_path / "empty"
    work.mkdir()
    policy = tmp_path / "thresholds.yaml"
    policy.write_text("monitoring:\n  min_quality: 0.8\n  window: 3w\n")
    before = len(_alerts(watched))
    home = str(explained_model.home)
    run = _civicml(["monitor", NAME, "--policy", str(policy), "--home", home], work, tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "ALERT quality" in run.stdout and "in Riverside" in run.stdout
    assert "audited:" in run.stdout and "monitoring run:" in run.stdout
    after = _alerts(watched)
    assert len(after) > before and any(r["group"] == "Riverside" and r.get("run_id") for r in after)
    assert sorted(p.name for p in work.iterdir()) == []  # nothing written into the folder


def test_the_policy_names_the_reference_training_held_out_or_the_same_weeks_a_year_earlier(watched):
    """`monitoring: reference:` picks what drift compares with; last_year reads the answers recorded 52 weeks
    earlier (four windows either side) with their times, so drift is calibrated on that history."""
    import registry
    from app.cli.monitor import YEAR, _reference
    from monitoring import monitor, open_store
    from registry import MonitoringPolicy

    other = "watched-router-a-year-on"
    if other not in registry.models(settings=watched):
        registry.register(registry.versions(NAME, settings=watched)[0].source, other, settings=watched)
    store = open_store(settings=watched)
    try:
        with pytest.raises(InvalidInput, match="no recorded answers"):
            _reference(other, watched, MonitoringPolicy(reference="last_year"), store)
        now = store.read(model=NAME)
        from monitoring import AnswerRecord, new_answer_id

        for shift in (YEAR, 0.0):  # the same traffic a year earlier, and now
            store.write([AnswerRecord(answer_id=new_answer_id(), model=other, version="1",
                                      inputs=r.inputs, answer=r.answer, confidence=r.confidence, latency_ms=1.0,
                                      group=r.group, time=r.time - shift) for r in now.itertuples()])
        _, reference = _reference(other, watched, MonitoringPolicy(reference="last_year"), store)
        assert reference.name == "the same weeks a year earlier" and len(reference.frame) == len(now)
        assert reference.frame["time"].max() < now["time"].min()
        report = monitor(store, reference, policy=MonitoringPolicy(), model=other)
        assert report.reference == "the same weeks a year earlier" and not report.drift.empty
    finally:
        store.close()
    _, reference = _reference(NAME, watched, MonitoringPolicy(reference="held_out"))
    assert reference.name.startswith("the held-out set") and "district" in reference.frame.columns
    with pytest.raises(InvalidInput, match="did you mean 'last_year'"):
        MonitoringPolicy(reference="lastyear")
