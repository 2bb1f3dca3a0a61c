"""The MLflow Model Registry, as release managers use it: the registry's face.

Only this package calls MLflow's registry API, and the other layers (``serving``, ``app``) reach it only
through the names listed in ``__all__`` here (``from registry import resolve``), never through its
modules. Public face::

    from registry import register, set_alias, approve, promote, rollback, audit, lineage, model_card, resolve

Every function checks the caller's role (:mod:`civicml.access`); without access
configuration the local user holds every role (single-user mode).

The rooms, each importing only the ones listed before it (no circles, no imports inside functions
between them; ``projects`` is imported lazily, since serving imports the registry)::

    checksum -> store -> use_cases -> gates -> variant_policy, monitoring_policy -> policy;  events -> guard
    policy, guard -> inputs;  store -> variant_lookup -> queries;  card, gates -> views;  transparency_file -> gates
    inputs, queries, rollout, lifecycle -> transparency;  events, guard, store -> alerts
    views, inputs, queries -> rules -> registration -> (variant_build ->) variants -> lifecycle
    guard -> rollout

The access names are imported here; every other name is imported from its module when first used
(:func:`civicml.lazy.lazy_face`), so that ``civicml whoami`` loads no MLflow and ``civicml models list``
no gates, cards or rules.
"""

from typing import TYPE_CHECKING

from civicml.access import (DATA_SCIENTIST, POLICY_OWNER, RELEASE_MANAGER, ROLES, SERVICE, Identity, caller,
                            new_token, require)
from civicml.lazy import lazy_face

if TYPE_CHECKING:
    from registry.alerts import AuditedAlerts, alert_key, alerts_of, record_alerts
    from registry.monitoring_policy import MonitoringPolicy, parse_window, record_mode, webhook_host
    from registry.gates import (ApprovalCount, Gate, GateVerdict, HoldoutIdentity, HumanAccountability,
                                LatencyBudget, MetricThreshold, NoRegression, PromotionContext, SignatureCompatible,
                                predicted_labels, signature_breaks)
    from registry.guard import audit_quietly, audit_record, authorize
    from registry.card import read_card, variant_cells
    from registry.rollout import Rollout, current_rollout, start_rollout, stop_rollout
    from registry.inputs import HeldOut, PromotionInputs, governing_policy, held_out, promotion_inputs
    from registry.jobs import record_scoring
    from registry.lifecycle import PromoteOptions, PromotionOutcome, approve, champion_history, promote, rollback, set_alias
    from registry.policy import AccountabilitySpec, HoldoutSpec, PromotionPolicy
    from registry.transparency import (ANNEX_IV_SECTIONS, TRANSPARENCY_FORMATS, annex_iv_html, annex_iv_markdown,
                                       atrs_record, eurocities_problems, eurocities_record, eurocities_schema,
                                       transparency_facts, write_transparency)
    from registry.transparency_file import HUMAN_FIELDS, HumanFields, accountability_problems
    from registry.queries import (CHALLENGER, CHAMPION, RESERVED_ALIASES, approvals, audit, lineage, model_card,
                                  models, resolve, show, version_of, versions)
    from registry.registration import register
    from registry.rules import (INSIGHT_FILES, boundaries_for, insight_file, recorded_fidelity, registration_holdout)
    from registry.store import (ArtifactsUnavailable, LocalModel, ModelStore, ModelVersion, is_version_number,
                                validate_alias, validate_name)
    from registry.variant_build import CompressOptions, VariantOutcome
    from registry.variant_lookup import find_variant, variant_summaries, variants_of
    from registry.variant_policy import VariantBounds, VariantPolicy
    from registry.variants import compress, compress_all

__getattr__, __dir__ = lazy_face(__name__, {
    "registry.alerts": ("AuditedAlerts", "alert_key", "alerts_of", "record_alerts"),
    "registry.monitoring_policy": ("MonitoringPolicy", "parse_window", "record_mode", "webhook_host"),
    "registry.card": ("read_card", "variant_cells"),
    "registry.rollout": ("Rollout", "current_rollout", "start_rollout", "stop_rollout"),
    "registry.gates": ("ApprovalCount", "Gate", "GateVerdict", "HoldoutIdentity", "HumanAccountability",
                       "LatencyBudget", "MetricThreshold",
                       "NoRegression", "PromotionContext", "SignatureCompatible", "predicted_labels",
                       "signature_breaks"),
    "registry.guard": ("audit_quietly", "audit_record", "authorize"),
    "registry.inputs": ("HeldOut", "PromotionInputs", "governing_policy", "held_out", "promotion_inputs"),
    "registry.jobs": ("record_scoring",),
    "registry.lifecycle": ("PromoteOptions", "PromotionOutcome", "approve", "champion_history", "promote", "rollback", "set_alias"),
    "registry.policy": ("AccountabilitySpec", "HoldoutSpec", "PromotionPolicy"),
    "registry.transparency": ("ANNEX_IV_SECTIONS", "TRANSPARENCY_FORMATS", "annex_iv_html", "annex_iv_markdown",
                              "atrs_record", "eurocities_problems", "eurocities_record", "eurocities_schema",
                              "transparency_facts", "write_transparency"),
    "registry.transparency_file": ("HUMAN_FIELDS", "HumanFields", "accountability_problems"),
    "registry.queries": ("CHALLENGER", "CHAMPION", "RESERVED_ALIASES", "approvals", "audit", "lineage", "model_card",
                         "models", "resolve", "show", "version_of", "versions"),
    "registry.registration": ("register",),
    "registry.rules": ("INSIGHT_FILES", "boundaries_for", "insight_file", "recorded_fidelity", "registration_holdout"),
    "registry.store": ("ArtifactsUnavailable", "LocalModel", "ModelStore", "ModelVersion", "is_version_number",
                       "validate_alias", "validate_name"),
    "registry.variant_build": ("CompressOptions", "VariantOutcome"),
    "registry.variant_lookup": ("find_variant", "variant_summaries", "variants_of"),
    "registry.variant_policy": ("VariantBounds", "VariantPolicy"),
    "registry.variants": ("compress", "compress_all"),
})

__all__ = [
    "AuditedAlerts", "MonitoringPolicy", "alert_key", "alerts_of", "parse_window", "record_alerts", "record_mode",
    "webhook_host",
    "ANNEX_IV_SECTIONS", "AccountabilitySpec", "HUMAN_FIELDS", "HumanAccountability", "HumanFields",
    "TRANSPARENCY_FORMATS", "accountability_problems", "annex_iv_html", "annex_iv_markdown", "atrs_record",
    "eurocities_problems", "eurocities_record", "eurocities_schema", "transparency_facts", "write_transparency",
    "CHALLENGER", "CHAMPION", "DATA_SCIENTIST", "INSIGHT_FILES", "POLICY_OWNER", "RELEASE_MANAGER",
    "RESERVED_ALIASES", "ROLES", "SERVICE",
    "ApprovalCount", "ArtifactsUnavailable", "CompressOptions", "Gate", "GateVerdict", "HeldOut",
    "HoldoutIdentity", "HoldoutSpec", "Identity", "LatencyBudget", "LocalModel", "MetricThreshold", "ModelStore",
    "ModelVersion", "NoRegression", "PromoteOptions", "PromotionContext", "PromotionInputs", "PromotionOutcome", "PromotionPolicy",
    "SignatureCompatible", "VariantBounds", "VariantOutcome", "VariantPolicy",
    "approvals", "approve", "audit", "audit_quietly", "audit_record", "authorize", "boundaries_for", "caller",
    "champion_history", "compress", "compress_all", "find_variant", "governing_policy", "held_out",
    "insight_file", "is_version_number", "lineage", "model_card", "models", "new_token", "predicted_labels",
    "promote", "promotion_inputs", "read_card", "record_scoring", "recorded_fidelity", "register", "registration_holdout", "require", "resolve",
    "rollback", "Rollout", "current_rollout", "start_rollout", "stop_rollout", "set_alias", "show", "signature_breaks", "validate_alias", "validate_name", "variant_cells",
    "variant_summaries", "variants_of", "version_of", "versions",
]
