"""The promotion gate of the skeleton: a worse model is refused and the champion stays."""

from __future__ import annotations

import registry
from projects import get_use_case, train


def test_worse_model_is_refused_and_champion_stays(settings, requests_dataset, requests_holdout):
    use_case = get_use_case("service_requests")
    good = train(use_case, requests_dataset, "logreg", settings=settings)
    weak = train(use_case, requests_dataset, "decision_tree", {"max_depth": 4}, settings=settings)
    registry.register(good.model_uri, "router", settings=settings)
    first = registry.promote("router", requests_holdout.frame, "department", settings=settings)
    assert first.promoted and first.candidate == "1"

    registry.register(weak.model_uri, "router", settings=settings)
    refused = registry.promote("router", requests_holdout.frame, "department",
                               policy=registry.PromotionPolicy(min_value=0.0), settings=settings)
    assert not refused.promoted
    regression = [v for v in refused.verdicts if v.gate.endswith("vs champion")][0]
    assert not regression.passed and regression.figure < regression.threshold
    store = registry.ModelStore(settings)
    assert store.by_alias("router", "champion").version == "1"
    assert store.by_alias("router", "challenger").version == "2"

    trail = registry.audit("router", settings=settings)
    assert [r["action"] for r in trail] == ["register", "promote", "register", "refuse"]
    assert trail[-1]["from"] == "1" and trail[-1]["to"] == "2" and trail[-1]["who"] == "tester"
    # the input contract of 'champion' is checked whatever the policy says
    assert {g["gate"] for g in trail[-1]["gates"]} == {"macro_f1 >= 0.0", "macro_f1 vs champion",
                                                       "signature compatible"}
    # a policy given in code overrides the governing one: the report and the trail say so
    assert refused.notes and refused.notes[0].startswith("policy override by tester")
    assert trail[-1]["notes"] == refused.notes


def test_threshold_gate_refuses_below_the_bar(settings, requests_dataset, requests_holdout):
    use_case = get_use_case("service_requests")
    weak = train(use_case, requests_dataset, "decision_tree", {"max_depth": 2}, settings=settings)
    registry.register(weak.model_uri, "router", settings=settings)
    outcome = registry.promote("router", requests_holdout.frame, "department",
                               policy=registry.PromotionPolicy(min_value=0.9), settings=settings)
    assert not outcome.promoted
    assert registry.ModelStore(settings).alias_or_none("router", "champion") is None
