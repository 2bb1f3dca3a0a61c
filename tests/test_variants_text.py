"""Variants of a MiniLM router: the paddle2onnx encoder matches Paddle fp32 to 1e-4, and ORT dynamic int8
(per-channel) keeps the router's answers."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest

from conftest import download_logged

pytest.importorskip("paddle")

from civicml.settings import Settings  # noqa: E402
from civicml.tags import TAG_VARIANT
from projects import train  # noqa: E402
import registry  # noqa: E402
from registry import register  # noqa: E402
from registry import VariantPolicy, compress, find_variant, variants_of

pytestmark = pytest.mark.slow  # exports and quantizes a 90 MB encoder

NAME = "service-requests-router"
QUICK = {1: 3, 64: 1}


@pytest.fixture(scope="module")
def router(requests_use_case, small_requests, requests_holdout, tmp_path_factory):
    settings = Settings.from_env(env={}, home=tmp_path_factory.mktemp("text-variants"), user="tester")
    data = small_requests.subset(range(200))
    result = train(requests_use_case, data, "minilm_linear", {}, settings=settings)
    parent = register(result.model_uri, NAME, settings=settings)
    return settings, parent, data, requests_holdout.subset(range(120))


def test_onnx_encoder_agrees_with_paddle_fp32_to_1e4(router, tmp_path):
    from pathlib import Path

    from projects.compression.cnn import export_onnx
    from projects.compression.ort_pyfunc import session
    from projects.text_encoder.runtime import InferenceEncoder, tokenize

    settings, parent, _, holdout = router
    folder = Path(download_logged(settings, f"models:/{NAME}/{parent.version}", str(tmp_path))) / "artifacts" / "router"
    paddle_encoder = InferenceEncoder(folder / "encoder" / "minilm", folder / "tokenizer.json", 128, "fp32")
    graph = session(export_onnx(folder / "encoder", "minilm"))
    ids, mask = tokenize(paddle_encoder.tokenizer, holdout.frame["description"].head(32).tolist())
    expected = paddle_encoder.embed_ids(ids, mask)
    got = graph.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    assert got.shape == expected.shape and got.shape[1] == 384
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_dynamic_int8_router_keeps_the_answers_and_loads_as_plain_pyfunc(router, tmp_path):
    settings, parent, data, holdout = router
    policy = VariantPolicy.from_dict({"max_quality_loss": 0.03, "min_agreement": 0.9, "min_cosine": 0.99})
    outcome = compress(NAME, parent.version, "int8", settings, data=data, holdout=holdout, policy=policy,
                       repeats=QUICK)
    assert outcome.passed, outcome.reason
    assert outcome.version.tags[TAG_VARIANT] == "int8"
    assert outcome.metrics["build_onnx_fp32_bytes"] / outcome.metrics["build_onnx_int8_bytes"] > 3.5
    assert outcome.metrics["size_reduction"] > 2.5
    local = download_logged(settings, f"models:/{NAME}/{outcome.version.version}", str(tmp_path))
    frame = mlflow.pyfunc.load_model(local).predict(holdout.X.head(4))
    assert list(frame.columns)[0] == "label" and len(frame) == 4
    assert np.allclose(frame.iloc[:, 1:].sum(axis=1), 1.0, atol=1e-5)
    assert find_variant(NAME, parent.version, "int8", settings).version == outcome.version.version
    from fastapi.testclient import TestClient

    from serving import Endpoint, create_app
    from serving.cpu import best_paths, cpu_flags

    registry.set_alias(NAME, "bench", parent.version, settings=settings)
    with TestClient(create_app(Endpoint(NAME, "bench", settings=settings, refresh_seconds=0, variant="int8"),
                               follow=False)) as client:
        compute = client.get("/health").json()["compute"]
    assert (compute["engine"], compute["precision"]) == ("onnxruntime", "int8")  # /health names the path taken
    assert compute["kernels"] == f"MLAS int8 on {best_paths(cpu_flags())['int8']}"


def test_distilled_student_is_gated_on_never_seen_phrasings_too(router, requests_use_case, tmp_path):
    settings, parent, data, holdout = router
    unseen = requests_use_case.integrate(requests_use_case.generate_sources(tmp_path, n=120, seed=20_000,
                                                                            phrasings="unseen"))
    outcome = compress(NAME, parent.version, "distilled", settings, data=data, holdout=holdout, repeats=QUICK,
                       build_settings={"unlabelled": 300, "vocabulary": "corpus"}, also_on={"never_seen": unseen},
                       policy=VariantPolicy.from_dict({"max_quality_loss": 0.03, "min_agreement": 0.0}))
    assert outcome.version.tags[TAG_VARIANT] == "distilled"
    never = [v for v in outcome.verdicts if v.gate.startswith("never_seen:")]
    assert len(never) == 1 and never[0].figure == pytest.approx(outcome.metrics["never_seen_quality_loss"])
    assert outcome.passed == (outcome.metrics["quality_loss"] <= 0.03 and never[0].passed)
    assert outcome.metrics["build_train_agreement_with_teacher"] > 0.9
    assert outcome.metrics["agreement"] > 0.9  # the seen phrasings: the student answers as its teacher
    assert outcome.metrics["size_reduction"] > 3  # float16 token table: 30k x 384
    # a static-embedding student: plain pyfunc, NumPy and tokenizers, the teacher's answer format
    local = download_logged(settings, f"models:/{NAME}/{outcome.version.version}", str(tmp_path / "student"))
    student = mlflow.pyfunc.load_model(local)
    frame = student.predict(holdout.X.head(3))
    assert list(frame.columns)[0] == "label" and len(frame) == 3
    assert np.allclose(frame.iloc[:, 1:].sum(axis=1), 1.0, atol=1e-5)
    with pytest.raises(Exception, match="non-empty string"):
        student.predict(holdout.X.head(1).assign(description=" "))


def test_soft_label_head_recovers_a_known_linear_rule():
    from projects.compression.text import fit_soft_head

    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 5))
    true = rng.normal(size=(5, 3)) * 3
    logits = X @ true
    P = np.exp(logits - logits.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    W, b = fit_soft_head(X, P, l2=1e-6)
    assert np.mean((X @ W + b).argmax(1) == P.argmax(1)) > 0.97


def test_bf16_is_refused_with_the_missing_cpu_flag_where_the_cpu_lacks_it(router):
    from projects.compression import CannotCompress
    from projects.compression.base import bf16_refusal, cpu_flags

    settings, parent, data, holdout = router
    assert bf16_refusal({"avx2", "amx_bf16"}) is None and bf16_refusal({"avx512_bf16"}) is None
    assert "avx512_bf16" in bf16_refusal({"avx2", "fma"})
    flags = cpu_flags()
    if {"avx512_bf16", "amx_bf16"} & flags:
        pytest.skip("this CPU computes bf16 natively: the refusal cannot happen here")
    before = len(variants_of(NAME, parent.version, settings))
    with pytest.raises(CannotCompress, match="lacks the avx512_bf16 and amx_bf16 flags") as refused:
        compress(NAME, parent.version, "bf16", settings, data=data, holdout=holdout, repeats=QUICK)
    assert "\n" not in str(refused.value)
    assert len(variants_of(NAME, parent.version, settings)) == before  # nothing was registered
