"""Which variants a registered version has, and which one serving loads: the lookups, apart from building.

A variant is a version of the *same* registered model, tagged::

    civicml.variant       = onnx | int8 | pruned | distilled | bf16
    civicml.variant_of    = <parent version>
    civicml.variant_gate  = passed | refused
    civicml.runtime       = onnx              (the serving runtime chosen for it: serving/onnx_runtime.py calls an
                                               ONNX Runtime session directly and answers in the parent's shape,
                                               any other pyfunc through pyfunc; every variant also loads with
                                               plain mlflow.pyfunc.load_model)

Aliases keep meaning the parent; a variant is chosen by kind (:func:`find_variant`), so when
``champion`` moves, the variants served with it are the new champion's. Only variants whose gate
passed are ever found. Building them: :mod:`registry.variant_build`; registering: :mod:`registry.variants`.
"""

from __future__ import annotations

import json
from typing import Any

from civicml.access import require
from civicml.errors import NotFound
from civicml.settings import Settings
from civicml.tags import (TAG_VARIANT, TAG_VARIANT_GATE, TAG_VARIANT_OF, TAG_VARIANT_RUN_ID,
                          TAG_VARIANT_VERDICTS)
from registry.store import ModelStore, ModelVersion



def variants_of(name: str, parent_version: str, settings: Settings | None = None) -> list[ModelVersion]:
    """Every registered variant of ``parent_version`` (an alias or number), newest first, passed or refused."""
    settings = settings or Settings.from_env()
    require(settings, "read")
    store = ModelStore(settings)
    return variants_in(store, name, store.version_at(name, parent_version).version)


def find_variant(name: str, parent_version: str, kind: str, settings: Settings | None = None) -> ModelVersion:
    """The newest ``kind`` variant of ``parent_version`` whose gate passed; :class:`NotFound` if there is none."""
    found = [v for v in variants_of(name, parent_version, settings) if v.tags.get(TAG_VARIANT) == kind]
    passed = [v for v in found if v.tags.get(TAG_VARIANT_GATE) == "passed"]
    if passed:
        return passed[0]
    parent = found[0].tags[TAG_VARIANT_OF] if found else parent_version
    if found:
        raise NotFound(f"model '{name}' version {parent}: its '{kind}' variant (version {found[0].version}) was "
                       f"refused by its gate and cannot be served")
    raise NotFound(f"model '{name}' version {parent} has no '{kind}' variant "
                   f"(build one with `civicml compress {name} {parent} --variant {kind}`)")


def variants_in(store: ModelStore, name: str, parent_version: str | None = None) -> list[ModelVersion]:
    return [v for v in reversed(store.versions(name)) if TAG_VARIANT in v.tags and not v.pending
            and (parent_version is None or v.tags.get(TAG_VARIANT_OF) == parent_version)]


_FIGURES = ("size_bytes", "parent_size_bytes", "size_reduction", "latency_b1_p50_ms", "latency_b64_p50_ms",
            "parent_latency_b1_p50_ms", "parent_latency_b64_p50_ms", "speedup_b1", "speedup_b64", "quality_loss",
            "agreement", "cosine")


def summary_of(store: ModelStore, version: ModelVersion) -> dict[str, Any]:
    """One variant as ``models show``, lineage, the card and the gate report show it: kind, parent, gate
    verdict, and the figures its run measured beside the parent (size, p50 latency at batch 1 and 64,
    quality on the held-out set, agreement with the parent)."""
    tags = version.tags
    run = store.run_or_none(tags.get(TAG_VARIANT_RUN_ID) or version.run_id)
    measured = dict(run.data.metrics) if run is not None else {}
    own = [k.removeprefix("parent_") for k in measured if k.startswith("parent_")]
    metric = (run.data.params.get("metric") if run is not None else None) or next(
        (k for k in own if k in measured and k != "size_bytes" and not k.startswith("latency_")), None)
    try:
        verdicts = json.loads(tags.get(TAG_VARIANT_VERDICTS) or "[]")
    except ValueError:  # cut at the tag's length limit: the run's variant/comparison.json has them all
        verdicts = []
    return {"version": version.version, "kind": tags.get(TAG_VARIANT), "variant_of": tags.get(TAG_VARIANT_OF),
            "gate": tags.get(TAG_VARIANT_GATE), "aliases": list(version.aliases), "run_id": run.info.run_id if run else None,
            "metric": metric, "quality": measured.get(metric) if metric else None,
            "parent_quality": measured.get(f"parent_{metric}") if metric else None,
            **{k: measured.get(k) for k in _FIGURES},
            "failed_gates": [f"{v.get('gate')}: {v.get('detail')}" for v in verdicts if not v.get("passed")]}


def variant_summaries(name: str, settings: Settings | None = None) -> dict[str, list[dict[str, Any]]]:
    """Parent version -> its variants (:func:`summary_of`), newest first, passed and refused."""
    settings = settings or Settings.from_env()
    require(settings, "read")
    store = ModelStore(settings)
    out: dict[str, list[dict[str, Any]]] = {}
    for v in variants_in(store, name):
        out.setdefault(v.tags.get(TAG_VARIANT_OF), []).append(summary_of(store, v))
    return out


def variant_facts(store: ModelStore, name: str, version: ModelVersion) -> dict[str, Any]:
    """For lineage and the model card: what variant ``version`` is (``variant``), or its variants (``variants``)."""
    if TAG_VARIANT in version.tags:
        return {"variant": summary_of(store, version)}
    return {"variants": [summary_of(store, v) for v in variants_in(store, name, version.version)]}


__all__ = [
           "find_variant", "summary_of", "variant_facts", "variant_summaries", "variants_in",
           "variants_of"]
