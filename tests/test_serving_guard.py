"""Team mode on the inference routes (401/403), loopback-only single-user mode, SIGTERM drain, deploy files."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml

import registry
from civicml.access import new_token
from civicml.settings import Settings
from projects import get_use_case, train
from serving import BackgroundServer, Endpoint, free_port

NAME = "guarded-router"
ROW = {"description": "Huge pothole on Oak Avenue", "district": "Midtown", "channel": "app", "hour": 8,
       "weekday": 1}
TOKENS = {who: new_token() for who in ("ana", "router")}
ACCESS = {"principals": {"ana": {"roles": ["data_scientist"], "token_sha256": TOKENS["ana"][1]},
                         "router": {"roles": ["service"], "token_sha256": TOKENS["router"][1]}}}


@pytest.fixture(scope="module")
def team(tmp_path_factory, small_requests):
    folder = tmp_path_factory.mktemp("guard")
    home = folder / "home"
    base = Settings.from_env(env={}, home=home, user="tester")
    result = train(get_use_case("service_requests"), small_requests, "logreg", settings=base)
    access = folder / "access.yaml"  # beside the home, not in it: the single-user test serves this home too
    access.write_text(yaml.safe_dump(ACCESS))
    scientist = base.with_(access_file=access, token=TOKENS["ana"][0])
    registry.register(result.model_uri, NAME, settings=scientist)
    service = base.with_(access_file=access, token=TOKENS["router"][0])
    return base, service


def test_team_mode_needs_a_service_token(team):
    _, service = team
    endpoint = Endpoint(NAME, alias="challenger", settings=service, refresh_seconds=0, key=NAME)
    body = {"dataframe_records": [ROW]}
    v2 = {"inputs": [{"name": k, "shape": [1], "datatype": "BYTES" if isinstance(v, str) else "INT64", "data": [v]}
                     for k, v in ROW.items()]}
    with BackgroundServer(endpoint) as server, httpx.Client(base_url=server.url) as http:
        assert "team" in http.get("/health").json()["auth"]
        for path, payload, key in [("/invocations", body, "message"), (f"/v2/models/{NAME}/infer", v2, "error")]:
            missing = http.post(path, json=payload)
            assert missing.status_code == 401 and "Bearer" in missing.json()[key]
            bogus = http.post(path, json=payload, headers={"Authorization": "Bearer civicml_bogus"})
            assert bogus.status_code == 401 and "not in the access configuration" in bogus.json()[key]
            wrong = http.post(path, json=payload, headers={"Authorization": f"Bearer {TOKENS['ana'][0]}"})
            assert wrong.status_code == 403 and "needs the service role" in wrong.json()[key]
            ok = http.post(path, json=payload, headers={"Authorization": f"Bearer {TOKENS['router'][0]}"})
            assert ok.status_code == 200, ok.text
        assert http.get("/openapi.json").json()["paths"]["/invocations"]["post"]["responses"]["401"]


def test_single_user_mode_serves_loopback_only(team, capsys):
    from app.cli import main

    base, _ = team
    assert main(["serve", NAME, "--home", str(base.home), "--host", "0.0.0.0"]) == 2
    assert "single-user mode serves on loopback only" in capsys.readouterr().err


def _serve(settings: Settings, port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "CIVICML_HOME": str(settings.home),
           "CIVICML_ACCESS_FILE": str(settings.access_file), "CIVICML_TOKEN": settings.token}
    return subprocess.Popen([sys.executable, "-m", "app.cli", "serve", f"{NAME}@challenger", "--port", str(port),
                             "--refresh", "0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_sigterm_drains_requests_in_flight(team):
    """SIGTERM while 32 requests (1,000 rows each) are in flight: every one is answered, then the server exits."""
    _, service = team
    port = free_port()
    proc = _serve(service, port)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() else ""
            time.sleep(0.2)
        headers = {"Authorization": f"Bearer {TOKENS['router'][0]}"}
        body = {"dataframe_records": [ROW] * 1000}
        with httpx.Client(base_url=url, timeout=120, limits=httpx.Limits(max_connections=32)) as http:
            def ask(_):
                return http.post("/invocations", json=body, headers=headers).status_code

            with ThreadPoolExecutor(32) as pool:
                answers = [pool.submit(ask, i) for i in range(32)]
                while True:  # every request has reached the server (answered or being answered)
                    text = httpx.get(f"{url}/metrics").text
                    in_flight = float(re.search(r"^civicml_requests_in_flight (\S+)$", text, re.M).group(1))
                    done = sum(float(x) for x in re.findall(r'^civicml_requests_total\{.*status="200".*\} (\S+)$',
                                                                text, re.M))
                    if in_flight + done >= 32:
                        break
                    time.sleep(0.05)
                assert in_flight > 0
                proc.send_signal(signal.SIGTERM)
                codes = [a.result() for a in answers]
        assert codes == [200] * 32
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after draining
    finally:
        if proc.poll() is None:
            proc.kill()


def test_deploy_writes_a_kserve_inference_service(tmp_path, capsys):
    from app.cli import main

    assert main(["deploy", NAME, "--tracking-uri", "sqlite:///x.db", "--out", str(tmp_path)]) == 2
    assert main(["deploy", NAME, "--tracking-uri", "http://mlflow.city:5000", "--out", str(tmp_path),
                 "--image", "registry.city/civicml:1"]) == 0
    manifest = yaml.safe_load((tmp_path / "inferenceservice.yaml").read_text())
    assert manifest["apiVersion"] == "serving.kserve.io/v1beta1" and manifest["kind"] == "InferenceService"
    container = manifest["spec"]["predictor"]["containers"][0]
    assert container["args"][:2] == [f"{NAME}@champion", "--host"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert "ENTRYPOINT [\"civicml\", \"serve\"]" in (tmp_path / "Dockerfile").read_text()


KSERVE_SCHEMA = Path(__file__).parent / "data" / "kserve-inferenceservice-v1beta1.schema.json.gz"


def _strict(schema):
    """The CRD's schema as the API server applies it with strict field validation (kubectl's default):
    an object field the schema does not name is an error, except where it keeps unknown fields."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out \
                and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def test_manifest_fits_kserves_inference_service_schema():
    """Validated against the InferenceService CRD's own schema, vendored from the KServe repository
    (tests/data, source commit inside). The KServe Python client cannot be installed beside this stack:
    kserve 0.21 requires pandas<3 and protobuf<7, and CivicML runs on pandas 3 and protobuf 7."""
    import gzip
    import json

    import jsonschema

    from serving.deploy import inference_service

    doc = json.loads(gzip.decompress(KSERVE_SCHEMA.read_bytes()))
    assert "kserve/kserve" in doc["source"]
    validator = jsonschema.Draft7Validator(_strict(doc["openAPIV3Schema"]))
    manifest = yaml.safe_load(yaml.safe_dump(inference_service(NAME, "champion", "img", "http://mlflow:5000")))
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(manifest)]
    assert errors == []
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", manifest["metadata"]["name"])  # DNS-1123 label
    assert all(isinstance(v, str) for part in ("labels", "annotations") for v in manifest["metadata"][part].values())
    # the check can fail: a misspelt field and a wrongly typed one are refused
    predictor = manifest["spec"]["predictor"]
    wrong = {**manifest, "spec": {"predictor": {**predictor, "replicas": 2, "minReplicas": "2"}}}
    found = {e.message for e in validator.iter_errors(wrong)}
    assert any("replicas" in m for m in found) and any("'2' is not of type 'integer'" in m for m in found), found
