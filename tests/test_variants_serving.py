"""Variants in the lifecycle: served by kind behind @champion over real HTTP, moved by promotion (which may
build them), shown by `models show`, lineage and the model card; a missing or refused variant is a 404 /
exit 2, never the parent instead.

One registered model, built up in order by module-scoped fixtures:
v1 (logreg) champion, v2 its onnx variant; v3 promoted with `variants.build: [onnx]` builds v4;
v5 promoted under a bound no variant can meet: v6 is refused, and v5 still becomes champion.
"""

from __future__ import annotations

import contextlib
import io

import httpx
import mlflow
import pytest

import registry
from civicml.settings import Settings
from civicml.tags import TAG_VARIANT_GATE
from projects import train
from registry import PromotionPolicy
from registry import VariantPolicy, compress, find_variant
from serving import BackgroundServer, Endpoint

NAME = "variant-router"  # not governed by the project's policy file (its gates time things)
ROW = {"description": "Huge pothole on Oak Avenue", "district": "Midtown", "channel": "app", "hour": 8,
       "weekday": 1}
QUICK = {1: 4, 64: 2}
OPEN = "metric: macro_f1\nmin_value: null\nmax_regression: 1.0\n"  # every candidate passes the parent's gates


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return Settings.from_env(env={}, home=tmp_path_factory.mktemp("variants-serving"), user="tester")


def _policy(home, text: str, file: str) -> PromotionPolicy:
    path = home.home / file
    path.write_text(OPEN + text)
    return PromotionPolicy.from_yaml(path)


def _train_and_register(use_case, data, home, **params):
    result = train(use_case, data, "logreg", {"char_ngrams": False, **params}, settings=home)
    return registry.register(result.model_uri, NAME, settings=home)


@pytest.fixture(scope="module")
def champion(requests_use_case, small_requests, requests_holdout, home):
    """v1 champion (promoted without building variants), v2 its onnx variant (built by `compress`)."""
    parent = _train_and_register(requests_use_case, small_requests, home)
    outcome = registry.promote(NAME, requests_holdout.frame, "department", settings=home,
                               policy=_policy(home, "", "open.yaml"))
    assert outcome.promoted and outcome.variants == []
    variant = compress(NAME, parent.version, "onnx", home, holdout=requests_holdout, repeats=QUICK,
                       policy=VariantPolicy())
    assert variant.passed, variant.reason
    return parent.version, variant.version.version


@pytest.fixture(scope="module")
def server(champion, home):
    """A real HTTP server following @champion's onnx variant (refreshed by hand: no timing in tests)."""
    endpoint = Endpoint(NAME, variant="onnx", settings=home, refresh_seconds=0)
    with BackgroundServer(endpoint) as running, httpx.Client(base_url=running.url, timeout=60) as http:
        yield endpoint, http


def _names_variant(http: httpx.Client, version: str, parent: str) -> None:
    """/health, /version, an MLflow answer and a V2 answer all name the variant and its parent version."""
    expected = {"name": NAME, "version": version, "alias": "champion", "runtime": "onnx", "variant": "onnx",
                "variant_of": parent}
    health = http.get("/health")
    assert health.status_code == 200 and health.json()["model"] == expected
    assert http.get("/version").json()["model"] == expected
    answer = http.post("/invocations", json={"dataframe_records": [ROW]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"] == expected
    assert answer.json()["predictions"][0]["label"] == "roads"
    assert (answer.headers["X-CivicML-Model-Version"], answer.headers["X-CivicML-Variant"],
            answer.headers["X-CivicML-Variant-Of"]) == (version, "onnx", parent)
    body = {"inputs": [{"name": k, "shape": [1], "datatype": "BYTES" if isinstance(v, str) else "INT64",
                        "data": [v]} for k, v in ROW.items()]}
    v2 = http.post(f"/v2/models/{NAME}/infer", json=body)
    assert v2.status_code == 200, v2.text
    assert v2.json()["model_version"] == version
    said = v2.json()["parameters"]
    assert {k: v for k, v in said.items() if not k.startswith("answer_id")} == {
        "alias": "champion", "runtime": "onnx", "variant": "onnx", "variant_of": parent}
    assert said["answer_id"] == v2.headers["X-CivicML-Answer-Id"]
    assert v2.json()["outputs"][0]["data"] == ["roads"]
    assert v2.headers["X-CivicML-Variant-Of"] == parent
    meta = http.get(f"/v2/models/{NAME}").json()
    assert meta["versions"] == [version] and meta["parameters"]["variant_of"] == parent


def test_serve_variant_answers_over_http_naming_kind_and_parent(server, champion, requests_holdout, home):
    endpoint, http = server
    parent, variant = champion
    _names_variant(http, variant, parent)
    rows = requests_holdout.X.head(40)
    answer = http.post("/invocations", json={"dataframe_split": {"columns": list(rows.columns),
                                                                 "data": rows.to_numpy().tolist()}})
    from civicml.tracking import configure

    configure(home)  # MLflow's fluent loader reads the process-wide URIs (reset after each test)
    expected = mlflow.pyfunc.load_model(f"models:/{NAME}/{parent}").predict(rows)
    assert [p["label"] for p in answer.json()["predictions"]] == [str(x) for x in expected]


def test_health_names_the_compute_path_the_variant_took_on_this_cpu(server):
    from projects.compression.ort_pyfunc import physical_cores
    from serving.cpu import RELEVANT_FLAGS, best_paths, cpu_flags

    _, http = server
    compute = http.get("/health").json()["compute"]
    flags = cpu_flags()
    assert compute["engine"] == "onnxruntime" and compute["precision"] == "fp32"  # a scikit-learn graph
    assert compute["intra_op_threads"] == physical_cores()
    assert compute["cpu_flags"] == [f for f in RELEVANT_FLAGS if f in flags]
    assert compute["best_offered"] == best_paths(flags)


@pytest.mark.slow
def test_the_civicml_serve_command_serves_the_variant(champion, home, tmp_path):
    """The command itself, as a user starts it: a separate process answering over HTTP."""
    import os
    import subprocess
    import sys
    import time

    from serving.server import free_port

    parent, variant = champion
    port = free_port("127.0.0.1")
    log = open(tmp_path / "serve.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", NAME, "--variant", "onnx", "--home",
                                str(home.home), "--port", str(port), "--refresh", "0"], stdout=log,
                               stderr=subprocess.STDOUT, env={**os.environ, "CIVICML_USER": "tester"})
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            deadline = time.monotonic() + 300  # a wait for start-up, not a timed assertion
            while True:
                assert process.poll() is None, (tmp_path / "serve.log").read_text()
                try:
                    if http.get("/ping").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(0.5)
            _names_variant(http, variant, parent)
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()


def test_a_missing_variant_is_404_over_http_and_exit_2_from_the_cli(champion, home, capsys):
    from app.cli import main

    parent, _ = champion
    with BackgroundServer(Endpoint(NAME, variant="int8", settings=home, refresh_seconds=0)) as running, \
            httpx.Client(base_url=running.url, timeout=60) as http:
        health = http.get("/health")
        assert health.status_code == 503 and f"version {parent} has no 'int8' variant" in health.json()["last_error"]
        assert health.json()["follows"] == f"models:/{NAME}@champion (int8 variant)"
        answer = http.post("/invocations", json={"dataframe_records": [ROW]})
        assert answer.status_code == 404 and f"version {parent} has no 'int8' variant" in answer.json()["message"]
        v2 = http.post(f"/v2/models/{NAME}/infer", json={"inputs": [
            {"name": "description", "shape": [1], "datatype": "BYTES", "data": ["pothole"]}]})
        assert v2.status_code == 404 and "no 'int8' variant" in v2.json()["error"]
    capsys.readouterr()
    assert main(["serve", NAME, "--variant", "int8", "--home", str(home.home), "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"has no 'int8' variant" in err and "Traceback" not in err


@pytest.fixture(scope="module")
def promoted_with_build(champion, requests_use_case, small_requests, requests_holdout, home):
    """v3 promoted by `civicml promote` under a policy whose `variants.build` asks for onnx: v4 is built."""
    from app.cli import main

    candidate = _train_and_register(requests_use_case, small_requests, home, C=3.0)
    policy = home.home / "build-onnx.yaml"
    policy.write_text(OPEN + "variants:\n  build: [onnx]\n")
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(["promote", NAME, "--policy", str(policy), "--holdout", *map(str, requests_holdout.sources),
                     "--home", str(home.home)])
    return candidate.version, code, buffer.getvalue()


def test_promotion_builds_the_missing_variants_the_policy_asks_for_and_reports_them(promoted_with_build, home):
    candidate, code, out = promoted_with_build
    assert code == 0, out
    built = find_variant(NAME, "champion", "onnx", home)
    assert built.tags["civicml.variant_of"] == candidate and built.tags[TAG_VARIANT_GATE] == "passed"
    assert f"VARIANT onnx v{built.version} (built now): passed, serves with version {candidate}" in out
    assert f"promoted {NAME} version {candidate} to 'champion'" in out
    [record] = [r for r in registry.audit(NAME, settings=home) if r["action"] == "promote" and r["to"] == candidate]
    assert record["variants"] == [{"kind": "onnx", "version": built.version, "gate": "passed", "built": True}]
    from app.cli import main

    trail = io.StringIO()
    with contextlib.redirect_stdout(trail):
        assert main(["audit", NAME, "--home", str(home.home)]) == 0
    assert f"    variants: onnx v{built.version} passed (built now)" in trail.getvalue()


def test_serving_follows_a_promotion_to_the_new_champions_variant(server, champion, promoted_with_build, home):
    endpoint, http = server
    candidate = promoted_with_build[0]
    assert endpoint.refresh(), endpoint.last_error
    _names_variant(http, find_variant(NAME, candidate, "onnx", home).version, candidate)


def test_a_canary_on_a_variant_endpoint_is_the_canary_versions_variant(server, champion, promoted_with_build,
                                                                       home):
    from registry import rollout

    endpoint, http = server
    old_parent, old_variant = champion
    rollout.start(NAME, old_parent, 100, "canary", settings=home)
    try:
        assert endpoint.refresh(), endpoint.last_error
        answer = http.post("/invocations", json={"dataframe_records": [ROW]}).json()["model"]
        assert (answer["version"], answer["variant"], answer["variant_of"], answer["alias"]) == \
            (old_variant, "onnx", old_parent, "canary")
    finally:
        rollout.stop(NAME, settings=home)
    assert endpoint.refresh(), endpoint.last_error
    assert http.post("/invocations", json={"dataframe_records": [ROW]}).json()["model"]["variant_of"] == \
        promoted_with_build[0]


def test_a_refused_variant_does_not_block_promotion_and_is_never_served(promoted_with_build, requests_use_case,
                                                                       small_requests, requests_holdout, home,
                                                                       capsys):
    from app.cli import main

    candidate = _train_and_register(requests_use_case, small_requests, home, C=0.5)
    policy = _policy(home, "variants:\n  build: [onnx]\n  kinds:\n    onnx: {min_size_reduction: 1000}\n",
                     "refuse-onnx.yaml")
    outcome = registry.promote(NAME, requests_holdout.frame, "department", settings=home, policy=policy)
    assert outcome.promoted, outcome.reason
    [variant] = outcome.variants
    assert variant["built"] and variant["gate"] == "refused" and variant["variant_of"] == candidate.version
    assert any("size reduction >= 1000" in g for g in variant["failed_gates"])
    assert registry.versions(NAME, settings=home)[-1].version == variant["version"]  # registered, to be seen
    # never served: not by a fresh server, not by the CLI, not by one that followed the old champion
    with BackgroundServer(Endpoint(NAME, variant="onnx", settings=home, refresh_seconds=0)) as running, \
            httpx.Client(base_url=running.url, timeout=60) as http:
        answer = http.post("/invocations", json={"dataframe_records": [ROW]})
        assert answer.status_code == 404 and "refused by its gate" in answer.json()["message"]
    capsys.readouterr()
    assert main(["serve", NAME, "--variant", "onnx", "--home", str(home.home), "--port", "1"]) == 2
    assert "refused by its gate and cannot be served" in capsys.readouterr().err
    plain = Endpoint(NAME, settings=home, refresh_seconds=0, batching=False)
    assert plain.load().version == candidate.version and plain.load().variant is None  # the parent serves as itself
    plain.close()


# -- models show, lineage, card -------------------------------------------------------------------------
def test_models_show_lists_each_version_with_its_variants(champion, home, capsys):
    import json

    from app.cli import main

    parent, variant = champion
    capsys.readouterr()
    assert main(["models", "show", NAME, "--home", str(home.home)]) == 0
    out = capsys.readouterr().out
    assert f"v{parent}  aliases:" in out and f"v{variant}  aliases:" not in out  # shown under its parent
    block = out.split(f"v{parent}  aliases:")[1]
    assert f"variant onnx v{variant}: gate passed" in block
    assert "B (" in block and "p50 b1" in block and "p50 b64" in block
    assert "macro_f1" in block and "(parent " in block and "agreement with the parent 1.0000" in block
    assert main(["models", "show", NAME, "--json", "--home", str(home.home)]) == 0
    rows = {r["version"]: r for r in json.loads(capsys.readouterr().out)}
    [shown] = rows[parent]["variants"]
    assert shown["kind"] == "onnx" and shown["version"] == variant and shown["gate"] == "passed"
    assert shown["agreement"] == 1.0 and shown["quality_loss"] == 0.0 and shown["metric"] == "macro_f1"
    for key in ("size_bytes", "latency_b1_p50_ms", "latency_b64_p50_ms", "quality", "parent_quality"):
        assert shown[key] > 0, key
    assert rows[variant]["variant"] == "onnx" and rows[variant]["variant_of"] == parent


def test_lineage_and_model_card_show_the_variants(champion, home):
    parent, variant = champion
    chain = registry.lineage(NAME, parent, settings=home)
    assert [v["version"] for v in chain["variants"]] == [variant]
    own = registry.lineage(NAME, variant, settings=home)
    assert own["variant"]["kind"] == "onnx" and own["variant"]["variant_of"] == parent
    card = registry.model_card(NAME, parent, settings=home)
    assert "## Variants" in card
    assert f"| onnx | {variant} |" in card and "| passed |" in card
    assert card.index("## Variants") > card.index("## Limitations")  # one block, last
    assert f"This version is the `onnx` variant of version {parent}" in registry.model_card(NAME, variant,
                                                                                             settings=home)
