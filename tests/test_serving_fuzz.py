"""Schema fuzzing: schemathesis against the server's own /openapi.json with every check.

The document is built from what is served (model names, versions, each model's input columns with
their types, categories and ranges), so the fuzzer's valid requests must be answered and its invalid
ones refused with a documented 4xx: no 500, no undocumented status code or content type, no answer
that breaks its schema.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import registry
from projects import get_use_case, train
from serving import BackgroundServer, Endpoint

NAME = "fuzzed-router"
WORDS = "fuzzed-words"
LAX = registry.PromotionPolicy(min_value=0.0, max_regression=1.0)

# The one allowance: a schema-valid V2 infer body may still be refused with 400, for rules the generic
# V2 schema does not say: each input's shape matches its data's length, every input has the same number
# of rows, one input per model column (named as the model's columns), each value fits its datatype
# (UINT8 0..255, ...) and the column's own checks (categories, ranges), no BYTES for a numeric column,
# requested outputs are the model's. Every other check runs there too; the MLflow routes have no allowance.
CONFIG = """\
[[operations]]
include-path-regex = "/infer$"
checks.positive_data_acceptance.expected-statuses = ["200", "400", "404"]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory, small_requests, requests_holdout):
    from civicml.settings import Settings

    from registry import VariantPolicy, compress

    settings = Settings.from_env(env={}, home=tmp_path_factory.mktemp("fuzz") / "home", user="tester")
    use_case = get_use_case("service_requests")
    result = train(use_case, small_requests, "logreg", settings=settings)
    registry.register(result.model_uri, NAME, settings=settings)
    assert registry.promote(NAME, requests_holdout.frame, "department", policy=LAX, settings=settings).promoted
    # a second model, served through its ONNX variant: two models and a variant on one server
    words = train(use_case, small_requests, "logreg", {"char_ngrams": False}, settings=settings)
    registry.register(words.model_uri, WORDS, settings=settings)
    assert registry.promote(WORDS, requests_holdout.frame, "department", policy=LAX, settings=settings).promoted
    assert compress(WORDS, "1", "onnx", settings, holdout=requests_holdout, repeats={1: 2, 64: 1},
                    policy=VariantPolicy()).passed
    endpoints = [Endpoint(NAME, settings=settings, refresh_seconds=0),
                 Endpoint(WORDS, settings=settings, refresh_seconds=0, variant="onnx")]
    with BackgroundServer(endpoints) as running:
        yield running


@pytest.mark.slow
def test_schemathesis_all_checks_find_nothing(server, tmp_path):
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    command = [str(Path(sys.executable).with_name("schemathesis")), "--config-file", str(config), "run",
               f"{server.url}/openapi.json", "--checks", "all", "--phases", "examples,coverage,fuzzing",
               "--max-examples", "10", "--seed", "7", "--generation-database", "none", "--no-color",
               "--workers", "1", "--request-timeout", "60"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "NO_COLOR": "1"})
    report = done.stdout[-20000:] + done.stderr[-5000:]
    assert done.returncode == 0, report
    assert " passed" in done.stdout and "failed" not in done.stdout.split("SUMMARY")[-1], report
