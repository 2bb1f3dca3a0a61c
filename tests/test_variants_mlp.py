"""Variants of the traffic_flow MLP: measured not to pay, so a request for one is refused with the reason,
in one line, and nothing is stored."""

from __future__ import annotations

import pytest

from civicml.settings import Settings
from projects import get_use_case, load_dataset, train
from projects.compression import CannotCompress
from registry import register
from registry import compress, variants_of
from registry.variant_build import kinds

pytestmark = pytest.mark.slow  # a small Paddle MLP is trained once for the module

NAME = "traffic-flow-forecaster"


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    use_case = get_use_case("traffic_flow")
    folder = tmp_path_factory.mktemp("flow-variants")
    data = load_dataset(use_case, use_case.generate_sources(folder / "train", n=1500, seed=3))
    settings = Settings.from_env(env={}, home=folder / "home", user="tester")
    result = train(use_case, data, "mlp", {"epochs": 2, "hidden": 32}, settings=settings, seed=0)
    parent = register(result.model_uri, NAME, settings=settings)
    return settings, parent, data


def test_the_mlp_offers_no_variant_kind(flow):
    settings, parent, _ = flow
    assert kinds(NAME, parent.version, settings) == []


@pytest.mark.parametrize("kind", ["int8", "pruned"])
def test_int8_or_pruned_mlp_is_refused_with_the_measured_reason_and_nothing_is_stored(flow, kind):
    settings, parent, data = flow
    with pytest.raises(CannotCompress, match=rf"cannot build '{kind}' for family 'mlp': .*cannot make it") as err:
        compress(NAME, parent.version, kind, settings, data=data)
    assert "\n" not in str(err.value)
    assert variants_of(NAME, parent.version, settings) == []
