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
                          onnx; bf16 (only on a CPU with avx512_bf16
                          or amx_bf16, else refused naming the flags)
traffic_flow ``mlp``      none: measured, they do not pay              (``DOES_NOT_PAY``)
========================  ==========================================  =========================
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from projects.compression.base import BuiltVariant, CannotCompress, Parent, bf16_refusal
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

        return {"int8": text.build_int8, "distilled": text.build_distilled, "onnx": text.build_onnx,
                "bf16": text.build_bf16}
    if parent.family == "cnn" and (parent.path / "artifacts" / "program").exists():
        from projects.compression import cnn

        return {"int8": cnn.build_int8, "pruned": cnn.build_pruned, "onnx": cnn.build_onnx}
    return {}


# Families whose variants were measured and do not pay: asked for one, CivicML says why instead of building it.
DOES_NOT_PAY = {
    "mlp": "the traffic_flow MLP spends about 1.4 ms of a 7.8 ms single-row call (1.5 ms at batch 64) in the "
           "network itself, the rest in pyfunc and Paddle's per-call work, so int8 or pruning cannot make it "
           "meaningfully faster (docs/variants.md)",
}


def kinds_for(parent: Parent) -> list[str]:
    """The variant kinds this parent's family supports, in the order ``--all`` builds them."""
    return list(_builders(parent))


def build(kind: str, parent: Parent, settings: Mapping[str, Any] | None = None) -> BuiltVariant:
    if kind not in KINDS:
        raise CannotCompress(f"unknown variant kind '{kind}' (known: {', '.join(KINDS)})")
    if kind == "bf16" and (refusal := bf16_refusal()):
        raise CannotCompress(refusal)
    builders = _builders(parent)
    if kind not in builders and parent.family in DOES_NOT_PAY:
        raise CannotCompress(f"cannot build '{kind}' for family '{parent.family}': {DOES_NOT_PAY[parent.family]}")
    if kind not in builders:
        supported = ", ".join(builders) or "none"
        raise CannotCompress(f"cannot build '{kind}' for family '{parent.family}' (it supports: {supported})")
    return builders[kind](parent, dict(settings or {}))


__all__ = ["KINDS", "BuiltVariant", "CannotCompress", "Comparison", "Parent", "build", "kinds_for", "measure"]
