"""Compressed and converted variants of registered models: builders only.

Public face::

    from projects.compression import Parent, BuiltVariant, CannotCompress, build, kinds_for, measure

``kinds_for(parent)`` names the variants a parent's family supports;
``build(kind, parent, settings)`` makes one (it may raise :class:`CannotCompress`,
an :class:`~civicml.errors.InvalidInput` whose message starts "cannot ...");
``measure`` times and scores a parent and a variant side by side in one process.
Registering, gating and finding variants is ``registry.variants``' job.

========================  ==========================================  =========================
family                    kinds                                        module
========================  ==========================================  =========================
scikit-learn pipelines    onnx (skl2onnx); pruned for trees            sklearn_variants
street_scenes ``cnn``     int8 (ORT static QDQ), pruned (L1 filters),  cnn
                          onnx (fp32 ORT)
311 ``minilm_*`` routers  int8 (ORT dynamic, per-channel), distilled,  text
                          onnx
========================  ==========================================  =========================
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from projects.compression.base import BuiltVariant, CannotCompress, Parent
from projects.compression.measure import Comparison, measure

KINDS = ("onnx", "int8", "pruned", "distilled", "bf16")
TREE_ESTIMATORS = ("DecisionTree", "HistGradientBoosting", "RandomForest", "ExtraTrees", "GradientBoosting")


def _builders(parent: Parent) -> dict[str, Callable[[Parent, Mapping[str, Any]], BuiltVariant]]:
    flavors = parent.flavors
    if "sklearn" in flavors:
        from projects.compression import sklearn_variants as sk

        builders = {"onnx": sk.build_onnx}
        final = str(parent.metadata.get("estimator") or "")
        if parent.family in ("decision_tree", "boosting") or final.startswith(TREE_ESTIMATORS):
            builders["pruned"] = sk.build_pruned
        return builders
    if parent.family.startswith("minilm") and (parent.path / "artifacts" / "router").exists():
        from projects.compression import text

        return {"int8": text.build_int8, "distilled": text.build_distilled, "onnx": text.build_onnx}
    if parent.family == "cnn" and (parent.path / "artifacts" / "program").exists():
        from projects.compression import cnn

        return {"int8": cnn.build_int8, "pruned": cnn.build_pruned, "onnx": cnn.build_onnx}
    return {}


def kinds_for(parent: Parent) -> list[str]:
    """The variant kinds this parent's family supports, in the order ``--all`` builds them."""
    return list(_builders(parent))


def build(kind: str, parent: Parent, settings: Mapping[str, Any] | None = None) -> BuiltVariant:
    if kind not in KINDS:
        raise CannotCompress(f"unknown variant kind '{kind}' (known: {', '.join(KINDS)})")
    builders = _builders(parent)
    if kind not in builders:
        supported = ", ".join(builders) or "none"
        raise CannotCompress(f"cannot build '{kind}' for family '{parent.family}' (it supports: {supported})")
    return builders[kind](parent, dict(settings or {}))


__all__ = ["KINDS", "BuiltVariant", "CannotCompress", "Comparison", "Parent", "build", "kinds_for", "measure"]
