"""Variants of the street_scenes CNN: the paddle2onnx export matches Paddle, static int8 is smaller and agrees,
and a network with 90% of its filters pruned is refused by the gate and cannot be found for serving."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest

from conftest import download_logged

from civicml.errors import NotFound
from civicml.settings import Settings
from civicml.tags import TAG_VARIANT, TAG_VARIANT_GATE
from projects import get_use_case, load_dataset, train
from registry import register
from registry import VariantPolicy, compress, find_variant, variants_of

pytestmark = pytest.mark.slow  # a Paddle CNN is trained once for the module (about 20 s on 2 cores)

NAME = "street-scenes-classifier"
QUICK = {1: 4, 64: 2}
LENIENT = VariantPolicy.from_dict({"max_quality_loss": 0.05, "min_agreement": 0.85})


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    use_case = get_use_case("street_scenes")
    folder = tmp_path_factory.mktemp("scenes-variants")
    data = load_dataset(use_case, use_case.generate_sources(folder / "train", n=360, seed=7))
    holdout = load_dataset(use_case, use_case.generate_sources(folder / "holdout", n=180, seed=10_000))
    settings = Settings.from_env(env={}, home=folder / "home", user="tester")
    result = train(use_case, data, "cnn", {"epochs": 3, "width": 16, "augment": False}, settings=settings, seed=0)
    parent = register(result.model_uri, NAME, settings=settings)
    return settings, parent, data, holdout


def _local(settings, version: str, tmp_path):
    return download_logged(settings, f"models:/{NAME}/{version}", str(tmp_path))


def test_onnx_export_agrees_with_paddle_to_1e4(scenes, tmp_path):
    from pathlib import Path

    from projects.compression.cnn import export_onnx
    from projects.compression.ort_pyfunc import session
    from projects.street_scenes.model import images_of

    settings, parent, _, holdout = scenes
    folder = Path(_local(settings, parent.version, tmp_path))
    graph = session(export_onnx(folder / "artifacts" / "program"))
    images = images_of(holdout.X)
    paddle_probs = mlflow.pyfunc.load_model(str(folder)).predict(images).iloc[:, 1:].to_numpy()
    onnx_probs = graph.run(None, {graph.get_inputs()[0].name: images})[0]
    assert onnx_probs.shape == paddle_probs.shape == (len(images), 6)
    np.testing.assert_allclose(onnx_probs, paddle_probs, atol=1e-4, rtol=0)


def test_static_int8_is_smaller_agrees_and_serves_as_a_plain_pyfunc(scenes, tmp_path):
    settings, parent, _, holdout = scenes
    outcome = compress(NAME, parent.version, "int8", settings, holdout=holdout, policy=LENIENT, repeats=QUICK)
    assert outcome.passed, outcome.reason
    assert outcome.version.tags[TAG_VARIANT] == "int8"
    m = outcome.metrics
    # the whole folder: weights plus MLflow's environment files, a few KB whose content follows MLflow's
    # requirement inference (it falls back to defaults when its subprocess is slow); the network alone is >= 3x
    assert m["size_reduction"] >= 2.5
    assert m["agreement"] >= 0.85 and m["cosine"] >= 0.98
    assert m["build_onnx_fp32_bytes"] / m["build_onnx_int8_bytes"] >= 3.0
    variant = mlflow.pyfunc.load_model(_local(settings, outcome.version.version, tmp_path / "v"))
    parent_model = mlflow.pyfunc.load_model(_local(settings, parent.version, tmp_path / "p"))
    from projects.street_scenes.model import images_of

    images = images_of(holdout.X.head(5))
    a, b = parent_model.predict(images), variant.predict(images)
    assert list(a.columns) == list(b.columns)
    assert variant.predict(images[:1]).shape[0] == 1
    assert find_variant(NAME, parent.version, "int8", settings).version == outcome.version.version


def test_ninety_percent_of_filters_pruned_is_refused_and_cannot_be_served(scenes):
    settings, parent, _, holdout = scenes
    outcome = compress(NAME, parent.version, "pruned", settings, holdout=holdout, repeats=QUICK,
                       build_settings={"keep": 0.1, "epochs": 1})
    assert not outcome.passed
    assert outcome.metrics["quality_loss"] > 0.02
    assert outcome.metrics["speedup_b64"] > 0  # measured all the same
    assert outcome.version.tags[TAG_VARIANT_GATE] == "refused"
    assert outcome.version.version in [v.version for v in variants_of(NAME, parent.version, settings)]
    with pytest.raises(NotFound, match="refused by its gate and cannot be served"):
        find_variant(NAME, parent.version, "pruned", settings)


def test_pruning_keeps_the_largest_l1_filters_and_full_width_reproduces_the_parent(scenes, tmp_path):
    from pathlib import Path

    import paddle
    import paddle.nn.functional as F

    from projects.compression.cnn import export_onnx, prune_weights, scene_net_state, scene_weights
    from projects.compression.ort_pyfunc import session
    from projects.street_scenes.model import SceneNet, images_of

    settings, parent, _, holdout = scenes
    fp32 = export_onnx(Path(_local(settings, parent.version, tmp_path)) / "artifacts" / "program")
    layers = scene_weights(fp32)
    width, state = prune_weights(layers, 1.0)
    net = SceneNet(6, width)
    net.set_state_dict({k: paddle.to_tensor(v.astype(np.float32)) for k, v in scene_net_state(net, state).items()})
    net.eval()
    images = images_of(holdout.X.head(16))
    graph = session(fp32)
    expected = graph.run(None, {graph.get_inputs()[0].name: images})[0]
    np.testing.assert_allclose(F.softmax(net(paddle.to_tensor(images)), -1).numpy(), expected, atol=1e-5)

    half, pruned = prune_weights(layers, 0.5)
    assert half == width // 2 and pruned["conv0.weight"].shape == (half, 3, 3, 3)
    assert pruned["conv4.weight"].shape == (4 * half, 4 * half, 3, 3) and pruned["head.weight"].shape == (4 * half, 6)
    l1 = np.abs(layers[0]["w"]).reshape(width, -1).sum(axis=1)
    kept = np.abs(pruned["conv0.weight"]).reshape(half, -1).sum(axis=1)
    assert kept.min() >= np.sort(l1)[-half]  # the survivors are the largest-L1 filters


def test_keep_candidates_are_read_smallest_first_and_checked():
    from projects.compression import CannotCompress
    from projects.compression.cnn import _keeps

    assert _keeps({"keep": "0.6,0.4"}) == [0.4, 0.6]
    assert _keeps({"keep": 0.5}) == [0.5] and _keeps({}) == [0.5]
    with pytest.raises(CannotCompress, match="between 0 and 1"):
        _keeps({"keep": "0.5,1.2"})
    with pytest.raises(CannotCompress, match="comma-separated numbers"):
        _keeps({"keep": "half"})
