"""Variants of scikit-learn versions: ONNX conversion (identity or a clear refusal), pruned trees, the
variant policy, lookup by kind, and the `civicml compress` command."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest

from civicml.errors import CivicMLError, InvalidInput, NotFound
from civicml.settings import Settings
from civicml.tracking import configure
from civicml.tags import TAG_RUNTIME, TAG_VARIANT, TAG_VARIANT_GATE, TAG_VARIANT_OF
from conftest import download_logged, load_logged, run_in_clean_process
from projects import train
from registry import PromotionPolicy, register, versions
from registry import VariantPolicy, compress, find_variant, variants_of

NAME = "service-requests-router"
QUICK = {1: 4, 64: 2}  # timed calls per batch size: the figures are not asserted on here
UNTIMED = VariantPolicy()  # built-in bounds only (no speed-up gate): tests assert no timings


@pytest.fixture(scope="module")
def registry_home(tmp_path_factory):
    return Settings.from_env(env={}, home=tmp_path_factory.mktemp("variants-home"), user="tester")


@pytest.fixture(scope="module")
def holdout(requests_holdout):
    return requests_holdout


@pytest.fixture(scope="module")
def word_logreg(requests_use_case, small_requests, registry_home):
    """A word-only TF-IDF + one-hot logistic regression: converts exactly."""
    result = train(requests_use_case, small_requests, "logreg", {"char_ngrams": False}, settings=registry_home)
    return register(result.model_uri, NAME, settings=registry_home)


@pytest.fixture(scope="module")
def onnx_outcome(word_logreg, registry_home, holdout):
    return compress(NAME, word_logreg.version, "onnx", registry_home, holdout=holdout, repeats=QUICK, policy=UNTIMED)


def _parent_and_variant_predictions(settings, parent, variant, frame):
    configure(settings)  # MLflow's fluent loaders read the process-wide URIs (reset after each test)
    p = mlflow.pyfunc.load_model(f"models:/{NAME}/{parent}")
    v = mlflow.pyfunc.load_model(f"models:/{NAME}/{variant}")
    return np.asarray(p.predict(frame)), np.asarray(v.predict(frame))


def test_onnx_variant_of_a_word_pipeline_gives_the_parents_labels_on_the_holdout(onnx_outcome, word_logreg,
                                                                                    registry_home, holdout):
    assert onnx_outcome.passed, onnx_outcome.reason
    assert onnx_outcome.metrics["agreement"] == 1.0
    assert onnx_outcome.metrics["quality_loss"] == 0.0
    tags = onnx_outcome.version.tags
    assert tags[TAG_VARIANT] == "onnx" and tags[TAG_VARIANT_OF] == word_logreg.version
    assert tags[TAG_VARIANT_GATE] == "passed" and tags[TAG_RUNTIME] == "onnx" and tags["civicml.sha256"]
    parent, variant = _parent_and_variant_predictions(registry_home, word_logreg.version,
                                                      onnx_outcome.version.version, holdout.X)
    assert variant.dtype == object and list(variant) == list(parent)
    # one row, as a serving request sends it
    p1, v1 = _parent_and_variant_predictions(registry_home, word_logreg.version, onnx_outcome.version.version,
                                             holdout.X.head(1))
    assert list(p1) == list(v1)


def test_variant_run_is_linked_to_the_parent_run_with_side_by_side_figures(onnx_outcome, word_logreg,
                                                                           registry_home):
    client = mlflow.MlflowClient(registry_home.tracking_uri)
    run = client.get_run(onnx_outcome.run_id)
    assert run.data.tags["civicml.parent_run_id"] == word_logreg.run_id
    assert run.data.tags[TAG_VARIANT_OF] == word_logreg.version
    for key in ("size_bytes", "parent_size_bytes", "latency_b1_p50_ms", "parent_latency_b64_p95_ms", "macro_f1",
                "parent_macro_f1", "agreement", "speedup_b1", "size_reduction"):
        assert key in run.data.metrics, key
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert "plots/variant_onnx_vs_parent.png" in artifacts
    assert onnx_outcome.version.run_id == run.info.run_id


def test_find_variant_follows_kind_and_refuses_missing_ones(onnx_outcome, word_logreg, registry_home):
    found = find_variant(NAME, word_logreg.version, "onnx", registry_home)
    assert found.version == onnx_outcome.version.version
    assert [v.version for v in variants_of(NAME, word_logreg.version, registry_home)] == [found.version]
    with pytest.raises(NotFound, match="no 'int8' variant"):
        find_variant(NAME, word_logreg.version, "int8", registry_home)


@pytest.mark.slow
def test_onnx_variant_loads_where_civicml_is_not_importable(onnx_outcome, registry_home, holdout, tmp_path):
    folder = download_logged(registry_home, f"models:/{NAME}/{onnx_outcome.version.version}", str(tmp_path / "m"))
    holdout.X.head(20).to_json(tmp_path / "rows.json", orient="records")
    script = ("import sys, json, pandas as pd, mlflow.pyfunc\n"
              "sys.path = [p for p in sys.path if p not in ('', '.', sys.argv[3])]  # not the repository's\n"
              "m = mlflow.pyfunc.load_model(sys.argv[1])\n"
              "labels = m.predict(pd.read_json(sys.argv[2], orient='records'))\n"
              "result = {'labels': [str(x) for x in labels]}")
    got = run_in_clean_process(script, folder, str(tmp_path / "rows.json"), str(Path(__file__).resolve().parent.parent),
                               cwd=tmp_path)
    assert not got["projects_loaded"]
    parent = load_logged(registry_home, f"models:/{NAME}/{onnx_outcome.parent}")
    assert got["labels"] == [str(x) for x in parent.predict(holdout.X.head(20))]


@pytest.mark.slow
def test_char_wb_pipeline_cannot_convert_and_nothing_is_stored(requests_use_case, small_requests, registry_home,
                                                             holdout):
    few = small_requests.subset(range(160))
    result = train(requests_use_case, few, "logreg", {"char_ngrams": True, "C": 3.0}, settings=registry_home)
    parent = register(result.model_uri, NAME, settings=registry_home)
    before = [v.version for v in versions(NAME, settings=registry_home)]
    configure(registry_home)  # this home's runs (unset, MLflow counted those of an empty ./mlflow.db)
    runs_before = len(mlflow.search_runs(search_all_experiments=True))
    assert runs_before > 0
    with pytest.raises(CivicMLError, match=r"cannot convert: .*analyzer='char_wb'"):
        compress(NAME, parent.version, "onnx", registry_home, data=few, holdout=holdout, repeats=QUICK)
    assert [v.version for v in versions(NAME, settings=registry_home)] == before
    assert len(mlflow.search_runs(search_all_experiments=True)) == runs_before


@pytest.mark.slow
def test_pruned_tree_is_smaller_and_gated(requests_use_case, small_requests, registry_home, holdout):
    result = train(requests_use_case, small_requests, "decision_tree", {"max_depth": 40, "min_samples_leaf": 1},
                   settings=registry_home)
    parent = register(result.model_uri, NAME, settings=registry_home)
    outcome = compress(NAME, parent.version, "pruned", registry_home, holdout=holdout,
                       build_settings={"tolerance": 0.02}, repeats=QUICK, policy=UNTIMED)
    assert outcome.version.tags[TAG_VARIANT] == "pruned"
    assert outcome.version.tags[TAG_VARIANT_GATE] == ("passed" if outcome.passed else "refused")
    configure(registry_home)
    before = mlflow.sklearn.load_model(f"models:/{NAME}/{parent.version}").steps[-1][1]
    after = mlflow.sklearn.load_model(f"models:/{NAME}/{outcome.version.version}").steps[-1][1]
    assert after.ccp_alpha > 0 and after.tree_.node_count < before.tree_.node_count
    assert outcome.metrics["quality_loss"] <= 0.05


def test_a_variant_cannot_be_compressed_again(onnx_outcome, registry_home, holdout):
    with pytest.raises(InvalidInput, match="is itself a 'onnx' variant"):
        compress(NAME, onnx_outcome.version.version, "onnx", registry_home, holdout=holdout, repeats=QUICK)


def test_unsupported_kind_is_refused_with_what_the_family_supports(word_logreg, registry_home, holdout):
    with pytest.raises(CivicMLError, match=r"cannot build 'int8' for family 'logreg' \(it supports: onnx\)"):
        compress(NAME, word_logreg.version, "int8", registry_home, holdout=holdout, repeats=QUICK)


# -- policy ---------------------------------------------------------------------------------------------
def test_variants_section_parses_with_per_kind_overrides_and_promotion_policy_accepts_it(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("metric: macro_f1\nmin_value: 0.5\nvariants:\n  max_quality_loss: 0.01\n  min_speedup: 1.1\n"
                    "  kinds:\n    int8: {min_size_reduction: 3.5, max_quality_loss: 0.005}\n  build: [onnx]\n")
    promotion = PromotionPolicy.from_yaml(path)
    assert promotion.min_value == 0.5 and promotion.variant_policy().build == ("onnx",)
    assert promotion.to_record()["variants"]["build"] == ["onnx"]  # recorded with every promotion
    assert promotion.variant_policy().bounds("int8") == VariantPolicy.from_yaml(path).bounds("int8")
    policy = VariantPolicy.from_yaml(path)
    assert policy.bounds("int8").min_size_reduction == 3.5 and policy.bounds("int8").max_quality_loss == 0.005
    assert policy.bounds("pruned").max_quality_loss == 0.01 and policy.bounds("pruned").min_speedup == 1.1
    assert policy.bounds("onnx").min_agreement == 1.0  # built in: a conversion must agree exactly


@pytest.mark.parametrize("text, message", [
    ("variants:\n  max_quality_los: 0.1\n", "did you mean 'max_quality_loss'"),
    ("variants:\n  kinds:\n    int4: {}\n", "unknown variant kind"),
    ("variants:\n  min_speedup: fast\n", "must be a number"),
    ("variants:\n  speedup_batch: 16\n", "must be 1, 32 or 64"),
    ("variants: [1]\n", "must be a mapping"),
    ("variants:\n  build: [int4]\n", "unknown variant kind 'int4' in 'variants.build'"),
    ("variants:\n  build: 3\n", "'variants.build' must list variant kinds"),
])
def test_variants_section_errors_name_the_field(tmp_path, text, message):
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(InvalidInput, match=message):
        VariantPolicy.from_yaml(path)
    with pytest.raises(InvalidInput, match=message):  # a promotion policy refuses it when read, not when used
        PromotionPolicy.from_yaml(path)


# -- CLI ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_compress_prints_side_by_side_and_missing_things_exit_2(word_logreg, registry_home, holdout,
                                                                    requests_holdout, capsys):
    from app.cli import main

    home = str(registry_home.home)
    assert main(["compress", NAME, "999", "--variant", "onnx", "--home", home]) == 2
    assert "has no version 999" in capsys.readouterr().err
    assert main(["compress", NAME, word_logreg.version, "--variant", "int4", "--home", home]) == 2
    assert "unknown variant kind 'int4'" in capsys.readouterr().err
    sources = [str(s) for s in holdout.sources]
    policy = registry_home.home / "untimed-policy.yaml"
    policy.write_text("variants:\n  kinds:\n    onnx: {min_agreement: 1.0}\n")
    code = main(["compress", NAME, word_logreg.version, "--variant", "onnx", "--holdout", *sources, "--home", home,
                 "--repeats", "4", "--policy", str(policy)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"{NAME} v{word_logreg.version} onnx: passed" in out and "PASS agreement >= 1.0" in out


# -- serving ------------------------------------------------------------------------------------------
def test_onnx_runtime_calls_the_session_directly_and_answers_as_the_parent(onnx_outcome, word_logreg,
                                                                           registry_home, holdout):
    from registry import resolve
    from serving.onnx_runtime import OnnxRuntime

    runtime = OnnxRuntime(resolve(NAME, onnx_outcome.version.version, settings=registry_home))
    runtime.load()
    assert runtime.direct
    plain = OnnxRuntime(resolve(NAME, word_logreg.version, settings=registry_home))
    plain.load()  # a scikit-learn parent: the pyfunc runtime's own path
    rows = holdout.X.head(50)
    assert list(runtime.predict(rows)) == list(plain.predict(rows))
    assert list(runtime.predict(rows.head(1))) == list(plain.predict(rows.head(1)))
