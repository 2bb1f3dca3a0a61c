"""The MLflow Model Registry, as release managers use it.

Only this package calls MLflow's registry API. Public face::

    from registry import register, promote, rollback, audit, lineage, resolve
"""

from registry.gates import Gate, GateVerdict, MetricThreshold, NoRegression, PromotionContext, predicted_labels
from registry.lifecycle import (CHALLENGER, CHAMPION, PromotionOutcome, audit, lineage, promote, register,
                                resolve, rollback, versions)
from registry.policy import PromotionPolicy
from registry.store import LocalModel, ModelStore, ModelVersion

__all__ = [
    "CHALLENGER", "CHAMPION", "Gate", "GateVerdict", "LocalModel", "MetricThreshold", "ModelStore", "ModelVersion",
    "NoRegression", "PromotionContext", "PromotionOutcome", "PromotionPolicy", "audit", "lineage",
    "predicted_labels", "promote", "register", "resolve", "rollback", "versions",
]
