"""Equity across districts (issue 25, item 3): the policy's metric per district on the held-out set, with bootstrap
intervals; each district's ratio to the best one and its change against the champion are gated, small districts
are reported and never gated. Real 311 routers, trained, registered and promoted through the real path: a fair
one, and one trained on data where most of Harbor's requests were routed to the wrong department."""

from __future__ import annotations

import json

import numpy as np
import pytest

import registry
from civicml.errors import InvalidInput
from registry.policy import EquitySpec, PromotionPolicy

SMALL = "Airport"  # a district of a dozen held-out rows, all of them labelled wrong
RATIO, VS_CHAMPION = "macro_f1 per district: ratio to the best >= 0.8", "macro_f1 per district vs champion"


def _policy(**equity) -> PromotionPolicy:
    """Only the equity gates can refuse: the overall floor and the champion bound are loose."""
    spec = {"by": "district", "min_ratio": 0.8, "max_group_regression": 0.05, "min_count": 30, **equity}
    return PromotionPolicy(min_value=0.5, max_regression=0.5, equity=EquitySpec(**spec))


@pytest.fixture(scope="module")
def routers(requests_dataset, requests_holdout, tmp_path_factory):
    """(settings, fair model URI, mislabelled model URI, the held-out frame with its small district)."""
    from civicml.settings import Settings
    from projects import get_use_case, train
    from projects.base import Dataset

    use_case = get_use_case("service_requests")
    settings = Settings.from_env(env={}, home=tmp_path_factory.mktemp("equity") / "home", user="tester")
    frame = requests_dataset.frame.copy()
    harbor = (frame.district == "Harbor").to_numpy() & (np.random.default_rng(0).random(len(frame)) < 0.7)
    frame.loc[harbor, "department"] = "parks"  # 70% of Harbor's requests routed to parks, whatever they said
    mislabelled = Dataset.build(requests_dataset.use_case, frame, requests_dataset.target, requests_dataset.features)
    words = {"char_ngrams": False}  # words only: a fit in about a second
    fair = train(use_case, requests_dataset, "logreg", words, settings=settings).model_uri
    unfair = train(use_case, mislabelled, "logreg", words, settings=settings).model_uri
    holdout = requests_holdout.frame.reset_index(drop=True).copy()
    small = holdout.index[::40][:12]
    departments = sorted(holdout.department.unique())
    holdout.loc[small, "district"] = SMALL
    holdout.loc[small, "department"] = [departments[(departments.index(d) + 1) % len(departments)]
                                        for d in holdout.loc[small, "department"]]
    return settings, fair, unfair, holdout


def test_the_equity_gate_passes_a_fair_router_refuses_a_mislabelled_one_and_never_gates_a_small_district(routers):
    settings, fair, unfair, holdout = routers
    registry.register(fair, "router", settings=settings)
    # the dozen Airport rows all answered wrong: judged (min_count 10), they alone refuse the fair router
    judged = registry.promote("router", holdout, "department", policy=_policy(min_count=10), settings=settings)
    verdicts = {v.gate: v for v in judged.verdicts}
    assert not judged.promoted and not verdicts[RATIO].passed, verdicts[RATIO].detail
    assert verdicts[RATIO].detail.startswith(f"{SMALL} ") and "clearly under 0.8" in verdicts[RATIO].detail

    # under min_count rows it is reported with its count and figure, and not gated
    fair_outcome = registry.promote("router", holdout, "department", policy=_policy(), settings=settings)
    verdicts = {v.gate: v for v in fair_outcome.verdicts}
    assert fair_outcome.promoted, fair_outcome.reason
    ratio = verdicts[RATIO]
    assert ratio.passed and ratio.figure >= 0.8 and f"not judged (under 30 rows): {SMALL} 12 rows" in ratio.detail
    assert verdicts[VS_CHAMPION].passed and verdicts[VS_CHAMPION].detail.startswith("no current champion")
    card = registry.model_card("router", "1", settings=settings)
    assert "### Equity by district" in card and "95% bootstrap intervals (200 seeded draws" in card
    row = next(line for line in card.splitlines() if line.startswith(f"| {SMALL} | 12 |"))
    assert row.endswith("| no: under 30 rows |")
    assert f"Equity by district is reported but not judged for {SMALL} (12 rows)" in card
    assert sum(line.endswith("| yes |") for line in card.splitlines()) == 8  # the eight districts of Riverton
    assert registry.read_card(card)["per_group"] == {}  # the console's per-group tables are the report_by ones

    # the router that learnt Harbor's mislabelled requests: refused by both equity gates, and by nothing else
    registry.register(unfair, "router", settings=settings)
    refused = registry.promote("router", holdout, "department", policy=_policy(), settings=settings)
    verdicts = {v.gate: v for v in refused.verdicts}
    assert not refused.promoted and {v.gate for v in refused.verdicts if not v.passed} == {RATIO, VS_CHAMPION}
    assert verdicts[RATIO].detail.startswith("Harbor ") and verdicts[RATIO].figure < 0.8
    assert verdicts[RATIO].detail.count("of the best") == 1  # only Harbor is clearly under the floor
    regression = verdicts[VS_CHAMPION]
    assert regression.detail.startswith("Harbor macro_f1 ") and "under champion v1" in regression.detail
    assert regression.figure > 0.05 and "clearly worse by more than 0.05" in regression.detail
    assert f"{SMALL} 12 rows" in regression.detail  # reported, never gated
    assert registry.ModelStore(settings).by_alias("router", "champion").version == "1"
    trail = registry.audit("router", settings=settings)
    assert trail[-1]["action"] == "refuse" and trail[-1]["policy"]["equity"]["min_ratio"] == 0.8


def test_the_district_map_states_each_districts_impact_ratio(routers, tmp_path):
    from conftest import load_logged
    from civicml.geo import load_boundaries
    from projects.service_requests.boundaries import GEOJSON
    from registry.views import district_views

    settings, _, unfair, holdout = routers
    frame = holdout[holdout.district != SMALL].reset_index(drop=True)
    answers = np.asarray(load_logged(settings, unfair).predict(frame)).astype(str)
    district_views(tmp_path, frame, frame.department.to_numpy(), answers, False, load_boundaries(GEOJSON))
    ratios = json.loads((tmp_path / "by_district.json").read_text())["impact_ratio"]
    assert min(ratios, key=ratios.get) == "Harbor" and ratios["Harbor"] < 0.8 and max(ratios.values()) == 1.0
    assert json.loads((tmp_path / "map.json").read_text())["impact_ratio"] == ratios


@pytest.mark.parametrize("text, says", [
    ("equity: {min_ratoi: 0.8}", "unknown field 'equity.min_ratoi' (did you mean 'min_ratio'?)"),
    ("equity: {min_ratio: 0.0}", "gate 'equity' gates nothing: an impact ratio is never below 0"),
    ("equity: {min_ratio: null}", "gate 'equity' gates nothing: set 'equity.min_ratio'"),
    ("equity: {max_group_regression: .inf}", "field 'equity.max_group_regression' is inf, not a finite bound"),
    ("equity: {min_ratio: 1.5}", "field 'equity.min_ratio' must be at most 1"),
    ("equity: {min_count: 0}", "field 'equity.min_count' must be >= 1"),
    ("metric: r2\nmin_value: 0.1\nequity: {by: district}", "r2 can be negative"),
])
def test_the_equity_section_reads_as_every_policy_section(text, says):
    with pytest.raises(InvalidInput) as err:
        PromotionPolicy.from_bytes(text.encode(), "equity.yaml")
    assert says in str(err.value) and str(err.value).startswith("policy file equity.yaml: ")


def test_the_documented_equity_section_is_a_policy():
    policy = PromotionPolicy.from_bytes(b"metric: macro_f1\nequity: {by: district, metric: macro_f1, min_ratio: 0.8, "
                                        b"max_group_regression: 0.05, min_count: 30, resamples: 200, "
                                        b"confidence: 0.95}\n", "doc.yaml")
    assert [g.title for g in policy.gates()][-2:] == [RATIO, VS_CHAMPION]
    assert PromotionPolicy.from_bytes(b"equity: true\n", "on.yaml").equity == EquitySpec()
