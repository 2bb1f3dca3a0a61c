"""The MLflow Model Registry, as release managers use it.

Only this package calls MLflow's registry API. Public face::

    from registry import register, set_alias, approve, promote, rollback, audit, lineage, model_card, resolve

Every function checks the caller's role (:mod:`civicml.access`); without access
configuration the local user holds every role (single-user mode).

The access names are imported here; every other name is imported from its module when first used
(:func:`civicml.lazy.lazy_face`), so that ``civicml whoami`` loads no MLflow and ``civicml models list``
no gates, cards or rules.
"""

from typing import TYPE_CHECKING

from civicml.access import (DATA_SCIENTIST, POLICY_OWNER, RELEASE_MANAGER, ROLES, SERVICE, Identity, caller,
                            new_token, require)
from civicml.lazy import lazy_face

if TYPE_CHECKING:
    from registry.gates import (ApprovalCount, Gate, GateVerdict, HoldoutIdentity, LatencyBudget, MetricThreshold,
                                NoRegression, PromotionContext, SignatureCompatible, predicted_labels,
                                signature_breaks)
    from registry.inputs import PromotionInputs, governing_policy, promotion_inputs
    from registry.jobs import record_scoring
    from registry.lifecycle import (PromotionOutcome, approve, champion_history, promote, register, rollback,
                                    set_alias)
    from registry.policy import HoldoutSpec, PromotionPolicy
    from registry.queries import (CHALLENGER, CHAMPION, RESERVED_ALIASES, approvals, audit, lineage, model_card,
                                  models, resolve, show, versions)
    from registry.store import ArtifactsUnavailable, LocalModel, ModelStore, ModelVersion
    from registry.variants import find_variant

__getattr__, __dir__ = lazy_face(__name__, {
    "registry.gates": ("ApprovalCount", "Gate", "GateVerdict", "HoldoutIdentity", "LatencyBudget", "MetricThreshold",
                       "NoRegression", "PromotionContext", "SignatureCompatible", "predicted_labels",
                       "signature_breaks"),
    "registry.inputs": ("PromotionInputs", "governing_policy", "promotion_inputs"),
    "registry.jobs": ("record_scoring",),
    "registry.variants": ("find_variant",),
    "registry.lifecycle": ("PromotionOutcome", "approve", "champion_history", "promote", "register", "rollback",
                           "set_alias"),
    "registry.policy": ("HoldoutSpec", "PromotionPolicy"),
    "registry.queries": ("CHALLENGER", "CHAMPION", "RESERVED_ALIASES", "approvals", "audit", "lineage", "model_card",
                         "models", "resolve", "show", "versions"),
    "registry.store": ("ArtifactsUnavailable", "LocalModel", "ModelStore", "ModelVersion"),
})

__all__ = [
    "CHALLENGER", "CHAMPION", "DATA_SCIENTIST", "POLICY_OWNER", "RELEASE_MANAGER", "RESERVED_ALIASES", "ROLES",
    "SERVICE",
    "ApprovalCount", "ArtifactsUnavailable", "Gate", "GateVerdict", "HoldoutIdentity", "HoldoutSpec", "Identity", "LatencyBudget",
    "LocalModel", "MetricThreshold", "ModelStore", "ModelVersion", "NoRegression", "PromotionContext",
    "PromotionInputs", "PromotionOutcome", "PromotionPolicy", "SignatureCompatible",
    "approvals", "approve", "audit", "caller", "find_variant", "champion_history", "governing_policy", "lineage", "model_card", "models",
    "new_token", "predicted_labels", "promote", "promotion_inputs", "record_scoring", "register", "require", "resolve", "rollback", "set_alias",
    "show", "signature_breaks", "versions",
]
