"""The console over HTTP (in process): every page renders, the try-it form answers and explains, and
the role checks hold (a service token cannot promote through it)."""

from __future__ import annotations

import html
import json
import re

import pytest
from fastapi.testclient import TestClient

from app.console import COOKIE, create_console
from civicml.errors import InvalidInput

pytest_plugins = ["explained_model"]  # one session fixture for every module that uses it
NAME = "explained-router"  # the model that fixture registers
ROW = {"description": "Huge pothole on Oak Avenue damaged my tire", "district": "Midtown", "channel": "app",
       "hour": 8, "weekday": 1}


@pytest.fixture(scope="module")
def client(explained_model):
    with TestClient(create_console(explained_model.settings)) as c:
        yield c


def test_every_page_renders(client, explained_model):
    index = client.get("/")
    assert index.status_code == 200 and NAME in index.text and "challenger → v1" in index.text
    assert "<td>Route 311 citizen service requests to the department that must handle them.</td>" in index.text
    model = client.get(f"/models/{NAME}")
    assert model.status_code == 200
    fidelity = re.search(r"same answer on (\d+) of 100 rows", model.text)  # the rules follow the model (not quality)
    assert fidelity and int(fidelity.group(1)) >= 90 and "How closely the plain rules follow the model" in model.text
    assert "register" in model.text and "tester" in model.text  # the audit trail
    assert "registered version 1 as challenger" in model.text and "challenger: - " not in model.text
    assert "logistic regression" in model.text and "Rules fidelity" not in model.text
    version = client.get(f"/models/{NAME}/versions/1")
    assert re.search(r"they give the same answer as the model on\s+<strong>\d+ of 100</strong>", version.text)
    assert version.status_code == 200 and re.search(r"has (no )?\w+ words", version.text) and "<dt>description: " in version.text
    assert version.text.count('class="district') == 8 and 'class="point' in version.text
    for png in re.findall(r'src="([^"]+\.png)"', version.text):
        image = client.get(png)
        assert image.status_code == 200 and image.content[:4] == b"\x89PNG"
    assert client.get("/static/console.js").status_code == 200
    assert client.get(f"/models/{NAME}/versions/1/files/secrets.txt").status_code == 404
    assert client.get("/models/no-such-model").status_code == 404


def test_a_model_page_leads_with_what_it_does_how_good_it_is_and_what_is_live(client, explained_model):
    """The use case's description, the card's intended use and limitations, the card's accuracy in words beside
    the trivial baseline the card measured on the same held-out rows."""
    from projects import get_use_case
    from registry import model_card
    from registry.card import read

    text = html.unescape(client.get(f"/models/{NAME}").text)
    lead = text[:text.index('id="versions-h"')]
    assert get_use_case("service_requests").description in lead
    card = read(model_card(NAME, "1", settings=explained_model.settings))
    assert card["intended_use"].startswith(get_use_case("service_requests").description.rstrip("."))
    assert f"<strong>Not for:</strong> {card['out_of_scope']}" in lead and "decisions about individual" in lead
    assert card["limitations"][-1] in lead
    accuracy, baseline = card["metrics"]["accuracy"], card["baseline"]["accuracy"]
    rows = re.search(r"\((\d+) rows", card["source"]).group(1)
    assert f"Right {round(100 * accuracy)} times in 100</strong> on {rows} held-out requests" in lead
    assert f"always answering '{card['baseline']['what'].split(chr(39))[1]}'" in lead and baseline < accuracy
    assert re.search(rf'id="baseline">For comparison, a trivial guess \(always answering .*?\) is <strong>right '
                     rf'{round(100 * baseline)} times in 100</strong>', lead)
    assert "No version is live yet; version 1 is the challenger" in lead


def test_try_it_answers_with_its_explanation_and_the_map(client):
    form = client.get(f"/models/{NAME}/try")
    assert form.status_code == 200
    districts = re.search(r'<select id="f-district".*?</select>', form.text, re.S).group(0)
    assert districts.count("<option") == 8 and '<label for="f-description">' in form.text
    response = client.post(f"/models/{NAME}/try", data={"ref": "challenger", **{k: str(v) for k, v in ROW.items()}})
    assert response.status_code == 200, response.text
    assert re.search(r'<output id="answer"[^>]*>roads</output>', response.text)
    assert "Answered &#39;roads&#39; (" in response.text and " raised it most (+" in response.text
    assert "pothole" in response.text and "version 1" in response.text
    # how sure: the top class probability, in words (the linear explanation's own sentence states the same share)
    sure = re.search(r'id="confidence"[^>]*><strong>(Very sure|Fairly sure|Unsure)</strong>: the model gives this '
                     r'answer a probability of (\d+) in 100', response.text)
    stated = re.search(r"Answered &#39;roads&#39; \((\d+)%\)", response.text)
    assert sure and stated and abs(int(sure.group(2)) - int(stated.group(1))) <= 1
    assert sure.group(1) == ("Very sure" if int(sure.group(2)) >= 90 else "Fairly sure" if int(sure.group(2)) >= 60
                             else "Unsure")
    assert 'class="district highlighted"' in response.text and 'data-name="Midtown"' in response.text
    bad = client.post(f"/models/{NAME}/try", data={"ref": "challenger", **{k: str(v) for k, v in ROW.items()},
                                                  "hour": "eight"})
    assert bad.status_code == 400 and "column &#39;hour&#39; must be numeric, got &#39;eight&#39;" in bad.text
    unknown = client.post(f"/models/{NAME}/try", data={"ref": "challenger", **{k: str(v) for k, v in ROW.items()},
                                                      "district": "Atlantis"})
    assert unknown.status_code == 400 and "unknown district" in unknown.text


def test_a_service_token_cannot_promote_and_release_buttons_follow_roles(explained_model, tmp_path):
    from civicml.access import new_token
    from civicml.settings import Settings
    from registry import audit

    rm_token, rm_digest = new_token()
    svc_token, svc_digest = new_token()
    access = tmp_path / "access.yaml"  # outside the shared home: other tests use it in single-user mode
    access.write_text(json.dumps({"principals": {"rui": {"roles": ["release_manager"], "token_sha256": rm_digest},
                                                 "router": {"roles": ["service"], "token_sha256": svc_digest}}}))
    team = Settings.from_env(env={"CIVICML_ACCESS_FILE": str(access), "CIVICML_TOKEN": svc_token},
                             home=explained_model.home, user="tester")
    before = len(audit(NAME, settings=team))
    with TestClient(create_console(team)) as c:
        page = c.get(f"/models/{NAME}")  # the console reads with its own (service) token
        assert page.status_code == 200 and "router (service)" in page.text and 'id="promote"' not in page.text
        assert 'id="rollback"' not in page.text and "Release actions" not in page.text
        refused = c.post(f"/models/{NAME}/promote")
        assert refused.status_code == 403 and "service may not promote" in refused.text
        c.cookies.set(COOKIE, svc_token)
        assert c.post(f"/models/{NAME}/promote").status_code == 403
        assert c.post(f"/models/{NAME}/rollback").status_code == 403
        wrong = c.post("/sign-in", data={"token": "civicml_not-a-token"}, follow_redirects=False)
        assert wrong.status_code == 403 and COOKIE not in wrong.cookies
        signed = c.post("/sign-in", data={"token": rm_token}, follow_redirects=False)
        assert signed.status_code == 303
        c.cookies.set(COOKIE, rm_token)
        page = c.get(f"/models/{NAME}")
        assert "rui (release_manager)" in page.text and 'id="promote"' in page.text
        assert 'id="rollback"' not in page.text  # nothing is live: nothing to roll back
        rollback = c.post(f"/models/{NAME}/rollback")  # allowed, but there is nothing to roll back to
        assert rollback.status_code == 404 and "has no alias &#39;champion&#39;" in rollback.text
        foreign = c.post(f"/models/{NAME}/rollback", headers={"origin": "http://evil.example"})
        assert foreign.status_code == 403
    # nothing was changed; the registry audits refusals, so the trail only gained the service's denied rollback
    added = audit(NAME, settings=team)[before:]
    assert added and all(e["action"] == "denied" for e in added)
    assert any(e["attempted"] == "rollback" and "service" in e["roles"] for e in added)


def test_promotion_through_the_console_refused_then_passed_says_what_is_live_since_when_and_why(small_requests,
                                                                                                  tmp_path):
    """A refused promotion's notice shows once, whole; a passed one makes the page say which version is live,
    since when, by whom and which release checks it passed, with the promotion card's figures (the policy's
    held-out set and the wording it never saw) beside the baseline."""
    from civicml.settings import Settings
    from projects import get_use_case, train
    from registry import audit, register

    settings = Settings.from_env(env={}, home=tmp_path / "home", user="tester")
    use_case = get_use_case("service_requests")
    name = use_case.registered_model  # the name the use case's policy governs
    stump = train(use_case, small_requests, "decision_tree", {"max_depth": 1}, settings=settings)
    register(stump.model_uri, name, settings=settings)
    with TestClient(create_console(settings)) as c:
        refused = c.post(f"/models/{name}/promote")  # the redirect is followed
        assert refused.status_code == 200
        record = audit(name, settings=settings)[-1]
        assert record["action"] == "refuse"
        reason = "; ".join(f"{g['gate']}: {g['detail']}" for g in record["gates"] if not g["passed"])
        text = html.unescape(refused.text)
        assert text.count('class="notice"') == 1 and f"promotion refused: {reason}</p>" in text
        assert "No version is live yet" in text and 'id="rollback"' not in text
        assert re.search(r"refused to make version 1 the champion; failed: [^<]*accuracy >= 0.8", text)
        logreg = train(use_case, small_requests, "logreg", {"char_ngrams": False}, settings=settings)
        register(logreg.model_uri, name, settings=settings)
        text = html.unescape(c.post(f"/models/{name}/promote").text)
    assert text.count('class="notice"') == 1 and "promoted version 2" in text
    live = re.search(r'id="live-version".*?</section>', text, re.S).group(0)
    record = audit(name, settings=settings)[-1]
    assert f"<strong>Version 2</strong> answers requests since {record['when'][:16].replace('T', ' ')}, put live by " \
           f"tester. Promoted; all {len(record['gates'])} release checks passed." in live
    assert "takes the same inputs as the live version" in live and "Failed" not in live
    assert 'id="rollback"' in text and "made version 2 the champion; " in text
    quality = re.search(r'id="quality".*?</section>', text, re.S).group(0)
    assert re.search(r"Right \d+ times in 100</strong> on \d+ held-out requests", quality)
    assert re.search(r"Right \d+ times in 100</strong> on wording it never saw \(\d+ requests\)", quality)
    assert re.search(r'id="baseline">For comparison, a trivial guess \(always answering \'\w+\'', quality)
    assert 'id="by-district"' in quality  # the promotion card's per-district figures


@pytest.mark.slow
def test_try_it_works_for_the_traffic_flow_use_case(settings, tmp_path):
    """A Paddle regression model on numeric columns: the form has one number field per column and the
    answer comes with the model-agnostic explanation."""
    import registry
    from projects import get_use_case, train

    use_case = get_use_case("traffic_flow")
    data = use_case.integrate(use_case.generate_sources(tmp_path / "d", n=use_case.default_size, seed=1))
    held = use_case.holdout(tmp_path / "h", n=5000)
    result = train(use_case, data, "mlp", {"epochs": 2}, settings=settings)
    registry.register(result.model_uri, "flow", settings=settings, holdout=held.frame, target=held.target)
    row = raw_flow_inputs(data.frame[list(data.features)].iloc[200])
    with TestClient(create_console(settings)) as c:
        form = c.get("/models/flow/try")
        # the raw inputs a person knows: hour of day and day of the week, not their sines and cosines
        assert form.status_code == 200 and 'id="f-hour"' in form.text and 'id="f-dow"' in form.text
        assert not re.search(r'id="f-\w+_(sin|cos)"', form.text) and "Hour sin" not in form.text
        assert 'id="f-weekend"' not in form.text and "column hour_sin, hour_cos" in form.text  # a secondary note
        # the use case's own words for its columns, logged with the model
        assert "Flow at this hour a week earlier <span class=\"unit\">(vehicles)</span>" in form.text
        assert "Temperature <span class=\"unit\">(°C)</span>" in form.text
        answer = c.post("/models/flow/try", data={"ref": "challenger", **{k: str(v) for k, v in row.items()}})
        assert answer.status_code == 200, answer.text
        assert re.search(r'<output id="answer" data-value="[0-9.]+">[0-9,]+ vehicles</output>', answer.text)
        likely = re.search(r"Likely between (-?[0-9,.]+) vehicles and ([0-9,.]+) vehicles</strong> \(90 times in 100",
                           answer.text)
        assert likely, answer.text[answer.text.index('id="result"'):][:1500]
        low, high = likely.groups()
        value = float(re.search(r'data-value="([0-9.]+)"', answer.text).group(1))
        assert float(low.replace(",", "")) <= value <= float(high.replace(",", ""))
        # optional counts left empty follow the one they refine: the same answer as when given that value
        blank = c.post("/models/flow/try", data={"ref": "challenger", **row, "lag_2": "", "lag_3": ""})
        same = c.post("/models/flow/try", data={"ref": "challenger", **row, "lag_2": row["lag_1"],
                                                "lag_3": row["lag_1"]})
        value_of = lambda page: re.search(r'data-value="([0-9.]+)"', page.text).group(1)  # noqa: E731
        assert blank.status_code == same.status_code == 200 and value_of(blank) == value_of(same)
        assert "Predicted " in answer.text and "(typical " in answer.text and "method: sampling_shapley" in answer.text
        # the road sensors on the city's map: one site each, with its own error, in the district it stands in
        version = c.get("/models/flow/versions/1")
        assert version.status_code == 200
        sites = re.findall(r'<path class="place"[^>]*aria-label="(S0\d): mae ([0-9.]+) over (\d+) held-out rows"',
                           version.text)
        assert sorted(s[0] for s in sites) == ["S01", "S02", "S03", "S04", "S05"]
        assert 'class="point' not in version.text and 'aria-label="Midtown: mae ' in version.text
        by_district = json.loads(c.get("/models/flow/versions/1/files/by_district.json").content)
        assert set(by_district["values"]) == {"Midtown", "Harbor", "Greenfield", "Eastgate", "Old Town"}
        assert c.get("/models/flow/versions/1/files/map.png").content[:4] == b"\x89PNG"


def raw_flow_inputs(row) -> dict:
    """A traffic-flow feature row as the try-it form asks for it: hour and day from their sine and cosine."""
    import math

    def position(base, period):
        return round(math.atan2(row[f"{base}_sin"], row[f"{base}_cos"]) % (2 * math.pi) * period / (2 * math.pi)) \
            % period

    raw = {k: str(v) for k, v in row.items() if not k.endswith(("_sin", "_cos")) and k != "weekend"}
    return {**raw, "hour": str(position("hour", 24)), "dow": str(position("dow", 7)),
            "holiday": str(int(row["holiday"])), "snow": str(int(row["snow"]))}


def test_prometheus_figures_give_requests_errors_and_latency_quantiles():
    from app.console.live import endpoints_from, parse

    text = """# TYPE civicml_requests_total counter
civicml_requests_total{model="m",protocol="mlflow",status="200",variant="-",version="3"} 8.0
civicml_requests_total{model="m",protocol="v2",status="200",variant="-",version="3"} 2.0
civicml_requests_total{model="m",protocol="mlflow",status="400",variant="-",version="3"} 1.0
civicml_requests_total{model="m",protocol="mlflow",status="500",variant="onnx",version="4"} 1.0
# TYPE civicml_request_seconds histogram
civicml_request_seconds_bucket{le="0.01",model="m",protocol="mlflow",variant="-",version="3"} 5.0
civicml_request_seconds_bucket{le="0.02",model="m",protocol="mlflow",variant="-",version="3"} 9.0
civicml_request_seconds_bucket{le="+Inf",model="m",protocol="mlflow",variant="-",version="3"} 10.0
civicml_request_seconds_count{model="m",protocol="mlflow",variant="-",version="3"} 10.0
civicml_request_seconds_sum{model="m",protocol="mlflow",variant="-",version="3"} 0.12
# TYPE civicml_serving_version gauge
civicml_serving_version{model="m",version="3"} 1.0
civicml_canary_weight{model="m",version="4"} 10.0
"""
    figures = parse(text, "http://e")
    three, four = figures.for_model("m")
    assert (three.version, three.requests, three.client_errors, three.server_errors) == ("3", 11, 1, 0)
    assert three.mean_ms == pytest.approx(12.0) and three.quantile_ms(0.5) == pytest.approx(10.0)
    assert three.quantile_ms(0.95) == pytest.approx(20.0)  # the 10th observation lies beyond 0.02: the last bound
    assert (four.variant, four.server_errors, four.error_rate) == ("onnx", 1, 1.0)
    assert figures.serving == {"m": "3"} and figures.canary == {"m": ("4", 10.0)}
    assert endpoints_from(None, env={"CIVICML_CONSOLE_ENDPOINTS": "http://a:1/, http://b:2"}) == ["http://a:1",
                                                                                                   "http://b:2"]
    with pytest.raises(InvalidInput, match="must be an http"):
        endpoints_from(["ftp://x"])


def test_console_command_refuses_a_bad_endpoint_in_one_line(tmp_path, capsys):
    from app.cli import main

    assert main(["console", "--endpoint", "localhost:5005", "--home", str(tmp_path / "home")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "endpoint 'localhost:5005' must be an http:// or https:// URL" in err[0]


@pytest.mark.slow
def test_live_endpoint_figures_and_variant_comparisons(requests_use_case, small_requests, requests_holdout,
                                                       tmp_path):
    """A real endpoint's /metrics and a real ONNX variant, read by the console through CivicML's API."""
    import httpx

    from civicml.settings import Settings
    from projects import train
    from registry import register
    from registry import VariantPolicy, compress
    from serving import BackgroundServer, Endpoint, EndpointClient

    settings = Settings.from_env(env={}, home=tmp_path / "home", user="tester")
    result = train(requests_use_case, small_requests, "logreg", {"char_ngrams": False}, settings=settings)
    parent = register(result.model_uri, "live-router", settings=settings)
    compress("live-router", parent.version, "onnx", settings, holdout=requests_holdout, repeats={1: 3, 64: 1},
             policy=VariantPolicy())
    with BackgroundServer(Endpoint("live-router", alias="challenger", settings=settings)) as server:
        with EndpointClient(server.url) as endpoint:
            endpoint.predict([ROW])
            endpoint.predict([ROW, ROW])
        refused = httpx.post(f"{server.url}/invocations", json={"dataframe_records": [{**ROW, "hour": "eight"}]})
        assert refused.status_code == 400
        with TestClient(create_console(settings, endpoints=[server.url, "http://127.0.0.1:9"])) as c:
            page = c.get("/endpoints")
            assert page.status_code == 200 and "cannot reach http://127.0.0.1:9" in page.text
            row = re.search(r'<th scope="row">live-router</th><td>1</td><td>-</td><td>(\d+)</td>\s*<td>(\d+)</td>'
                            r'<td>(\d+)</td>\s*<td>([0-9.]+)</td><td>([0-9.]+)</td><td>([0-9.]+)</td>', page.text)
            assert row, page.text
            assert row.group(1, 2, 3) == ("2", "0", "0") and float(row.group(5)) <= float(row.group(6))
            # the refused body never reached a version: counted under '-'
            assert re.search(r'<th scope="row">live-router</th><td>-</td><td>-</td><td>1</td>\s*<td>1</td>', page.text)
            assert f"serves live-router v{parent.version}" in page.text
            model = c.get("/models/live-router")
    assert model.status_code == 200 and 'id="live-h"' in model.text
    variants = re.search(r'<table class="variants">.*?</table>', model.text, re.S).group(0)
    assert "Variants of v1" in variants and "<td>onnx</td>" in variants and ">passed" in variants
    assert re.search(r"macro_f1</span> 0\.\d{4} → 0\.\d{4}", variants) and "100.0%" in variants  # ONNX: the same answers
    assert re.search(r"[0-9.]+ → [0-9.]+</td>", variants)  # latency, parent beside variant


def test_console_on_the_team_server_app(explained_model, tmp_path, monkeypatch):
    """The mlflow.app plugin: MLflow's own server app with the console at /console; a service token
    (the server's own) still cannot promote through it."""
    from civicml.access import new_token
    from app.console.team import create_app

    svc_token, svc_digest = new_token()
    access = tmp_path / "access.yaml"
    access.write_text(json.dumps({"principals": {"router": {"roles": ["service"], "token_sha256": svc_digest}}}))
    for key, value in {"CIVICML_HOME": str(explained_model.home), "CIVICML_ACCESS_FILE": str(access),
                       "CIVICML_TOKEN": svc_token, "CIVICML_USER": "tester"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("CIVICML_TRACKING_URI", raising=False)
    with TestClient(create_app(), base_url="http://localhost") as c:
        assert c.get("/health").text == "OK"  # MLflow's own routes answer as before
        index = c.get("/console/")
        assert index.status_code == 200 and f'href="/console/models/{NAME}"' in index.text
        assert 'href="/console/static/console.css"' in index.text and c.get("/console/static/console.css").is_success
        assert 'id="promote"' not in c.get(f"/console/models/{NAME}").text
        refused = c.post(f"/console/models/{NAME}/promote", headers={"origin": "http://localhost"})
        assert refused.status_code == 403 and "service may not promote" in refused.text


@pytest.mark.slow
def test_civicml_server_mounts_the_console_through_mlflows_app_plugin(tmp_path):
    """`civicml server` -> `mlflow server --app-name civicml` -> uvicorn --factory app.console.team:create_app.

    The entry point is the one pyproject.toml declares, written as an installation writes it (this
    checkout may be installed from before it existed)."""
    import os
    import signal
    import subprocess
    import sys
    import time
    import tomllib
    from pathlib import Path

    import httpx

    from serving import free_port

    root = Path(__file__).resolve().parents[1]
    declared = tomllib.loads((root / "pyproject.toml").read_text())["project"]["entry-points"]["mlflow.app"]
    dist = tmp_path / "site" / "civicml_entry_points-0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: civicml-entry-points\nVersion: 0\n")
    (dist / "entry_points.txt").write_text("[mlflow.app]\n" + "".join(f"{k} = {v}\n" for k, v in declared.items()))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(tmp_path / "site")]),
           "CIVICML_HOME": str(tmp_path / "home"), "CIVICML_USER": "tester"}
    env.pop("CIVICML_TRACKING_URI", None)
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "app.cli", "server", "--backend-store-uri",
                               f"sqlite:///{tmp_path}/mlflow.db", "--artifacts-destination",
                               (tmp_path / "artifacts").as_uri(), "--port", str(port), "--no-check",
                               "--allowed-hosts", f"localhost:{port}"],  # the console's own calls still get in
                              env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()[-3000:]
            try:
                if httpx.get(f"http://localhost:{port}/health", timeout=2).text == "OK":
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        page = httpx.get(f"http://localhost:{port}/console/", timeout=30)
        assert page.status_code == 200 and "Registered models" in page.text and "/console/static/console.js" in page.text
        assert httpx.get(f"http://localhost:{port}/console/endpoints", timeout=30).status_code == 200
        assert "civicml: console on" in (tmp_path / "server.log").read_text()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()


def test_try_it_and_rules_for_a_tabular_use_case_file(tmp_path):
    """A department's own use-case file: registered through `civicml register` (its declared held-out
    rows give the rules and charts), and the try-it form has a field per declared feature."""
    import yaml

    from app.cli import main
    from civicml.settings import Settings
    from projects import get_use_case, train
    from tabular_exports import INSPECTIONS_YAML, inspections

    inspections(tmp_path / "exports", n=300, seed=2)
    spec = yaml.safe_load(INSPECTIONS_YAML.format(name="inspections", families="decision_tree"))
    for source, file in zip(spec["sources"], ("inspections.csv", "complaints.csv")):
        source["path"] = str(tmp_path / "exports" / file)
    path = tmp_path / "inspections" / "usecase.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    settings = Settings.from_env(env={}, home=tmp_path / "home", user="tester")
    use_case = get_use_case(str(path))
    data = use_case.integrate(use_case.generate_sources(None))
    result = train(use_case, data, "decision_tree", {}, settings=settings)
    assert main(["register", result.model_uri, "--name", "inspections", "--home", str(settings.home)]) == 0
    row = use_case.holdout().frame[list(data.features)].iloc[0]
    with TestClient(create_console(settings)) as c:
        model = c.get("/models/inspections")
        assert re.search(r"same answer on \d+ of 100 rows", model.text) and "Charts of v1" in model.text
        # what a department's own use-case file says the model does, and how good it is beside a trivial guess
        assert f'<p id="what-it-does" class="lead">{use_case.description}</p>' in model.text
        assert re.search(r"Right \d+ times in 100</strong> on \d+ held-out cases", model.text)
        assert re.search(r'id="baseline">For comparison, a trivial guess \(always answering', model.text)
        version = c.get("/models/inspections/versions/1")
        assert version.status_code == 200 and "<ol class=\"rules\">" in version.text
        form = c.get("/models/inspections/try")
        assert form.status_code == 200 and all(f'id="f-{f}"' in form.text for f in data.features)
        answer = c.post("/models/inspections/try", data={"ref": "challenger",
                                                         **{k: str(v) for k, v in row.items()}})
        assert answer.status_code == 200, answer.text
        assert re.search(r'<output id="answer"[^>]*>(yes|no)</output>', answer.text) and 'id="sentence"' in answer.text


@pytest.mark.slow
def test_try_it_with_a_picture_for_the_street_scenes_model(tmp_path):
    """A model that takes a picture tensor: the form asks for an upload; the answer names the regions of the
    picture it rests on (region occlusion); an upload that is not a picture is refused with a message."""
    from civicml.settings import Settings
    from projects import get_use_case, train
    from projects.street_scenes.generator import CLASSES
    from registry import register

    settings = Settings.from_env(env={}, home=tmp_path / "home", user="tester")
    use_case = get_use_case("street_scenes")
    data = use_case.integrate(use_case.generate_sources(tmp_path / "images", n=240, seed=2))
    register(train(use_case, data, "cnn", {"epochs": 1, "width": 16}, settings=settings, seed=0).model_uri,
             "scenes", settings=settings)
    picture = next((tmp_path / "images").rglob("*.png")).read_bytes()
    with TestClient(create_console(settings)) as c:
        form = c.get("/models/scenes/try")
        assert form.status_code == 200 and 'type="file"' in form.text and 'enctype="multipart/form-data"' in form.text
        answer = c.post("/models/scenes/try", data={"ref": "challenger"},
                        files={"image": ("street.png", picture, "image/png")})
        assert answer.status_code == 200, answer.text
        label = re.search(r'<output id="answer"[^>]*>(\w+)</output>', answer.text).group(1)
        assert label in CLASSES
        assert "region occlusion" in answer.text and 'id="picture"' in answer.text
        assert re.search(r"resting most on the (top|upper middle|lower middle|bottom), [\w ]+ of the picture: hiding "
                         r"it lowers that probability by 0\.\d\d|hiding any one region of the picture does not lower",
                         answer.text)
        assert answer.text.count("of the picture</td>") == 8
        not_a_picture = c.post("/models/scenes/try", data={"ref": "challenger"},
                               files={"image": ("notes.txt", b"hello", "text/plain")})
        assert not_a_picture.status_code == 400 and "not a picture" in not_a_picture.text


def test_the_card_states_the_trivial_baseline_on_its_own_rows_and_reads_back():
    """registry.card: the baseline the console shows beside the model's figure is measured on the card's rows."""
    import numpy as np
    import pandas as pd

    from registry.card import evaluate, read, render

    truth = np.array(["roads"] * 6 + ["water"] * 3 + ["parks"])
    answers = np.array(["roads"] * 5 + ["water"] * 4 + ["parks"])
    frame = pd.DataFrame({"district": ["Harbor"] * 5 + ["Midtown"] * 5})
    evaluation = evaluate(truth, answers, frame, "classification", "held-out set h (10 rows, fingerprint ab)",
                          report_by=("district",))
    assert evaluation.baseline == {"what": "always answering 'roads', the most common answer in these rows",
                                   "accuracy": 0.6, "macro_f1": pytest.approx(0.25)}
    evaluation.also["wording it never saw"] = {"metric": "accuracy", "value": 0.73, "set": "unseen", "rows": 400}
    card = read(render(name="m", version="1", intended_use="Route requests (use case `x`).", facts={}, data=None,
                       evaluation=evaluation, stage="registered"))
    assert card["intended_use"] == "Route requests (use case `x`)."
    assert card["metrics"] == {"accuracy": 0.9, "macro_f1": pytest.approx(0.9221, abs=1e-4)}
    assert card["baseline"]["accuracy"] == 0.6 and card["baseline"]["what"].startswith("always answering 'roads'")
    assert card["also"] == [{"metric": "accuracy", "value": 0.73, "what": "wording it never saw", "rows": "400",
                             "set": "unseen"}]
    assert card["per_group"]["district"] == {"Harbor": {"accuracy": 1.0, "rows": 5.0},
                                             "Midtown": {"accuracy": 0.8, "rows": 5.0}}
    assert any("accuracy varies by district" in item for item in card["limitations"])
    flow = evaluate(np.array([100.0, 200, 300, 1000]), np.array([110.0, 190, 310, 900]), pd.DataFrame(index=range(4)),
                    "regression", "s")
    assert flow.baseline["what"] == "always answering 250, the median of these rows"
    assert flow.baseline["mae"] == pytest.approx((150 + 50 + 50 + 750) / 4)


def test_try_it_folds_engineered_columns_into_what_a_person_knows():
    """An hour's sine and cosine are one 'Hour of day' field, the weekend follows from the day, a count that
    refines another is optional and follows it; defaults are the stored training sample's typical values."""
    import math

    import pandas as pd
    from mlflow.types import ColSpec, Schema

    from app.console.tryit import fields_for, row_of

    names = ("lag_1", "lag_2", "hour_sin", "hour_cos", "dow_sin", "dow_cos", "weekend", "temp_c")
    inputs = Schema([ColSpec("double", n) for n in names]).inputs
    hours = [8, 8, 8, 17]
    background = pd.DataFrame({"lag_1": [100.0, 300, 500, 700], "lag_2": [1.0] * 4, "temp_c": [10.0, 12, 14, 30],
                               "hour_sin": [math.sin(2 * math.pi * h / 24) for h in hours],
                               "hour_cos": [math.cos(2 * math.pi * h / 24) for h in hours],
                               "dow_sin": [0.0] * 4, "dow_cos": [1.0] * 4, "weekend": [0.0] * 4})
    fields = fields_for(inputs, {}, background, {"temp_c": {"label": "Air temperature"}})
    assert [f["name"] for f in fields] == ["lag_1", "lag_2", "hour", "dow", "temp_c"]
    by_name = {f["name"]: f for f in fields}
    assert by_name["hour"]["default"] == "8" and by_name["dow"]["options"][5] == ("5", "Saturday")
    assert by_name["lag_1"]["default"] == 400 and by_name["lag_1"]["unit"] == "vehicles"
    assert by_name["lag_2"]["optional"] and by_name["lag_2"]["hint"] == "same as 'Vehicles in the last hour'"
    assert (by_name["temp_c"]["label"], by_name["temp_c"]["unit"]) == ("Air temperature", "°C")
    kinds = {n: "double" for n in names}
    row, shown = row_of(fields, {"lag_1": "300", "hour": "6", "dow": "5", "temp_c": "20"}, kinds)
    assert row["lag_2"] == 300.0 and shown["lag_2"] == "300"
    assert row["hour_sin"] == pytest.approx(1.0) and row["hour_cos"] == pytest.approx(0.0, abs=1e-12)
    assert row["weekend"] == 1.0 and set(row) == set(names)
    with pytest.raises(InvalidInput, match="'Air temperature' \\(temp_c\\) must be a number"):
        row_of(fields, {"lag_1": "300", "hour": "6", "dow": "5", "temp_c": "warm"}, kinds)
