"""Building a variant: convert or compress a registered version, measure it beside its parent, gate it.

:func:`build_variant` builds one (``projects.compression``), logs it as its own MLflow run in the
parent's experiment (tags ``civicml.parent_run_id``, ``civicml.variant_of``), measures it side by side
with the parent on the held-out set in one process (size, latency p50/p95 at batch 1 and 64, quality,
agreement, cosine; a comparison plot) and applies the policy's ``variants:`` section
(:mod:`registry.variant_policy`). It registers nothing: :func:`registry.variants.compress` calls it, then
registers what it built. A build that fails (``cannot convert: ...``) leaves no run.

The run is written through this store's own :class:`MlflowClient`. Only the model itself is logged
through MLflow's fluent API, because its flavours' ``log_model`` takes no client: inside
:func:`civicml.tracking.fluent`, which points the fluent API at this store for that call and puts back
what was there.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import mlflow
from mlflow.entities import Metric, Param

from civicml.access import require
from civicml.errors import InvalidInput
from civicml.settings import Settings
from civicml.tracking import experiment_id as find_experiment, fluent
from civicml.tags import (TAG_CODE_VERSION, TAG_DATA_FINGERPRINT, TAG_FAMILY, TAG_PARENT_RUN_ID,
                          TAG_REGISTERED_MODEL, TAG_RUNTIME, TAG_USE_CASE, TAG_VARIANT, TAG_VARIANT_GATE,
                          TAG_VARIANT_OF, TAG_VARIANT_RUN_ID, TAG_VARIANT_VERDICTS)
from registry.gates import GateVerdict
from registry.inputs import choose_held_out
from registry.store import ModelStore, ModelVersion
from registry.use_cases import use_case_named
from registry.variant_policy import VariantBounds, VariantPolicy

SERVING_RUNTIME = "onnx"  # never wrong for a pyfunc (it falls back to pyfunc's path), faster for ORT graphs
COPIED_RUN_TAGS = (TAG_USE_CASE, TAG_FAMILY, TAG_DATA_FINGERPRINT, TAG_CODE_VERSION)


@dataclass
class CompressOptions:
    """How :func:`registry.variants.compress` builds and judges a variant (every field optional).

    ``data`` (a Dataset, or source files) is what calibration, fine-tuning and pruning choices use; by
    default the parent's own training sources, re-read from its run's ``data/dataset.json``, split as its
    training run split them. ``holdout`` (a Dataset, or source files) is what the gate scores both on; by
    default the governing policy's held-out set (:func:`registry.inputs.choose_held_out`). ``policy``: the
    bounds, by default the use case's policy file's ``variants:`` section. A refused variant is registered
    with ``civicml.variant_gate=refused`` (so the release manager sees why) unless ``register_refused`` is
    false; it is never found by :func:`registry.find_variant`. ``also_on`` names more held-out Datasets (e.g.
    ``{"never_seen": ...}``) on which the quality bound must hold too. ``repeats``: timing repeats per batch
    size; ``build_settings``: the builder's own settings."""

    data: Any = None
    holdout: Any = None
    policy: VariantPolicy | None = None
    build_settings: Mapping[str, Any] | None = None
    repeats: Mapping[int, int] | None = None
    register_refused: bool = True
    also_on: Mapping[str, Any] | None = None


@dataclass
class VariantOutcome:
    name: str
    parent: str
    kind: str
    method: str
    version: ModelVersion | None
    metrics: dict[str, float]
    verdicts: list[GateVerdict]
    run_id: str | None

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.verdicts)

    @property
    def reason(self) -> str:
        failed = [v for v in self.verdicts if not v.passed]
        return "; ".join(f"{v.gate}: {v.detail}" for v in failed) or "all gates passed"


@dataclass
class BuiltVariant:
    """A variant built, measured and gated, not registered yet: its outcome, its logged model and the tags its
    registered version gets."""

    outcome: VariantOutcome
    model_uri: str
    version_tags: dict[str, str] = field(default_factory=dict)


@dataclass
class _Source:
    """The parent a variant is built from, and what it is judged on."""

    parent: ModelVersion
    local: Any  # registry.store.LocalModel
    use_case: Any
    run: Any  # the parent's training run, or None
    data: Any
    holdout: Any
    also_on: dict[str, Any]
    bounds: VariantBounds


# -- the parent and its data -----------------------------------------------------------------------
def kinds(name: str, version: str, settings: Settings | None = None) -> list[str]:
    """The variant kinds ``version``'s family supports."""
    from projects.compression import kinds_for  # noqa: PLC0415 - serving imports the registry: no builders

    settings = settings or Settings.from_env()
    require(settings, "read")
    store = ModelStore(settings)
    parent = store.version_at(name, version)
    local = store.fetch(name, parent)
    return kinds_for(parent_for_builders(parent, local, None, None))


def parent_for_builders(version: ModelVersion, local, train, valid):
    """``version`` as ``projects.compression`` builders take it."""
    from projects import get_use_case  # noqa: PLC0415 - as above
    from projects.compression import Parent  # noqa: PLC0415

    return Parent(local.path, get_use_case(version.tags.get(TAG_USE_CASE, "")),
                  version.tags.get(TAG_FAMILY) or str(local.metadata.get("family", "")), local.metadata,
                  train, valid)


def _parent_of(store: ModelStore, name: str, version: str, kind: str):
    """(the parent version, its use case, its training run or None); refuses a variant as a parent."""
    from projects.compression import KINDS  # noqa: PLC0415 - as above

    if kind not in KINDS:
        raise InvalidInput(f"unknown variant kind '{kind}' (known: {', '.join(KINDS)})")
    parent = store.version_at(name, version)
    if TAG_VARIANT in parent.tags:
        raise InvalidInput(f"model '{name}' version {parent.version} is itself a '{parent.tags[TAG_VARIANT]}' "
                           f"variant of version {parent.tags.get(TAG_VARIANT_OF)}; compress the parent")
    use_case_name = parent.tags.get(TAG_USE_CASE)
    if not use_case_name:
        raise InvalidInput(f"model '{name}' version {parent.version} records no use case (tag civicml.use_case)")
    run = store.get_run(parent.run_id) if parent.run_id else None
    return parent, use_case_named(use_case_name), run


def _source(store: ModelStore, name: str, version: str, kind: str, options: CompressOptions) -> _Source:
    """The parent and the data sets the variant is built from and judged on (see :class:`CompressOptions`)."""
    from projects import load_dataset  # noqa: PLC0415 - as above

    parent, use_case, run = _parent_of(store, name, version, kind)

    def read(given):  # source files: the use case reads them
        return load_dataset(use_case, given) if isinstance(given, (list, tuple)) else given

    policy = options.policy or VariantPolicy.from_yaml(getattr(use_case, "policy_file", None))
    data, holdout = read(options.data), read(options.holdout)
    also_on = {k: read(v) for k, v in (options.also_on or {}).items()}
    if data is None and run is not None:
        data = _training_data(store, run, use_case)
    if holdout is None:
        holdout = choose_held_out(store, name, store.settings, use_case).dataset
    return _Source(parent, store.fetch(name, parent), use_case, run, data, holdout, also_on, policy.bounds(kind))


def _training_data(store: ModelStore, run, use_case):
    """The parent's training data re-read from the sources its run recorded; None if they are gone."""
    try:
        text = store.read_run_text(f"runs:/{run.info.run_id}/data/dataset.json")
    except Exception:  # noqa: BLE001 - no record: the builders that need data say so
        return None
    sources = [Path(s) for s in json.loads(text).get("sources", [])]
    if not sources or not all(s.exists() for s in sources):
        return None
    dataset = use_case.integrate(sources)
    recorded = run.data.tags.get(TAG_DATA_FINGERPRINT)
    if recorded and dataset.fingerprint != recorded:
        return None  # the files changed since training: not the data the parent learned from
    return dataset


# -- build, log, measure ----------------------------------------------------------------------------
def build_variant(name: str, version: str, kind: str, settings: Settings,
                  options: CompressOptions | None = None) -> BuiltVariant:
    """Build the ``kind`` variant of ``name`` ``version``, log it as its own run, measure it beside its parent
    and gate it; nothing is registered (:func:`registry.variants.compress` does that)."""
    from projects.compression import build  # noqa: PLC0415 - as above

    options = options or CompressOptions()
    require(settings, "register")
    store = ModelStore(settings)
    src = _source(store, name, version, kind, options)
    seed = int(src.run.data.params.get("seed", 0)) if src.run is not None else 0
    split = src.use_case.split(src.data, seed=seed) if src.data is not None else (None, None)
    parent = parent_for_builders(src.parent, src.local, *split)
    built = build(kind, parent, options.build_settings)  # CannotCompress: nothing made yet
    run_id = _start_run(store, name, src, kind)
    try:
        model_uri = _log_model(store, run_id, src, kind, built)
        outcome, comparison = _measure(store, model_uri, src, kind, options)
        outcome.name, outcome.method, outcome.run_id = name, built.method, run_id
        _log_results(store, run_id, name, src, kind, built, outcome, comparison)
    except BaseException:
        store.client.set_terminated(run_id, "FAILED")
        store.client.delete_run(run_id)  # a failed command leaves nothing behind
        raise
    finally:  # the comparison figure's: never imported here, where a failed import would replace the error
        plt = sys.modules.get("matplotlib.pyplot")
        if plt is not None:
            plt.close("all")
    tags = {TAG_VARIANT: kind, TAG_VARIANT_OF: src.parent.version, TAG_VARIANT_GATE: "passed" if outcome.passed else "refused",
            TAG_RUNTIME: SERVING_RUNTIME, TAG_VARIANT_RUN_ID: run_id,
            TAG_VARIANT_VERDICTS: json.dumps([v.to_dict() for v in outcome.verdicts])[:4900]}
    return BuiltVariant(outcome, model_uri, tags)


def _start_run(store: ModelStore, name: str, src: _Source, kind: str) -> str:
    """The variant's run, in its parent's experiment (nested in the caller's active run, if any)."""
    run = src.run
    experiment_id = run.info.experiment_id if run is not None else find_experiment(store.settings, src.use_case.name)
    tags = {TAG_VARIANT: kind, TAG_VARIANT_OF: src.parent.version, TAG_REGISTERED_MODEL: name}
    if run is not None:
        tags[TAG_PARENT_RUN_ID] = run.info.run_id
        tags.update({k: run.data.tags[k] for k in COPIED_RUN_TAGS if k in run.data.tags})
    active = mlflow.active_run()
    if active is not None:
        tags["mlflow.parentRunId"] = active.info.run_id
    created = store.client.create_run(experiment_id, tags=tags, run_name=f"{name} v{src.parent.version} {kind}")
    return created.info.run_id


def _log_model(store: ModelStore, run_id: str, src: _Source, kind: str, built) -> str:
    """The variant's model, logged into its run (the one fluent call: a flavour's ``log_model`` takes no
    client); its ``models:/`` URI."""
    metadata = {**dict(src.local.metadata), "variant": kind, "variant_of": src.parent.version,
                "variant_method": built.method}
    with fluent(store.settings), mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
        return built.log("model", metadata)


def _measure(store: ModelStore, model_uri: str, src: _Source, kind: str, options: CompressOptions):
    """(the outcome's verdicts and metrics, the comparison on the held-out set)."""
    from projects.compression import measure  # noqa: PLC0415 - as above

    metric, bounds = src.use_case.metric, src.bounds
    with tempfile.TemporaryDirectory() as tmp:
        variant_path = store.download(model_uri, tmp)
        comparison = measure(src.local.path, variant_path, src.holdout.frame, src.holdout.target, metric,
                             repeats=dict(options.repeats or {}))
        verdicts, extra = bounds.gates(comparison), {}
        for label, other in src.also_on.items():
            more = measure(src.local.path, variant_path, other.frame, other.target, metric, repeats={1: 1, 64: 1})
            extra.update({f"{label}_{metric}": more.variant[metric], f"{label}_parent_{metric}": more.parent[metric],
                          f"{label}_quality_loss": more.quality_loss, f"{label}_agreement": more.agreement})
            verdicts.append(GateVerdict(f"{label}: {metric} loss <= {bounds.max_quality_loss}",
                                        more.quality_loss <= bounds.max_quality_loss + 1e-12, more.quality_loss,
                                        bounds.max_quality_loss,
                                        f"parent {more.parent[metric]:.4f}, variant {more.variant[metric]:.4f} on "
                                        f"{more.rows} rows of {label}"))
    metrics = {**comparison.to_metrics(), **extra}
    return VariantOutcome("", src.parent.version, kind, "", None, metrics, verdicts, None), comparison


def _log_results(store: ModelStore, run_id: str, name: str, src: _Source, kind: str, built,
                 outcome: VariantOutcome, comparison) -> None:
    """Params, metrics, the comparison plot and verdicts, the gate tag; the run ends FINISHED."""
    client, holdout, data = store.client, src.holdout, src.data
    outcome.metrics = {**outcome.metrics, **{f"build_{k}": v for k, v in built.figures.items()},
                       "gate_passed": float(outcome.passed)}
    params = {"kind": kind, "method": built.method[:500], "parent_version": src.parent.version,
              "metric": src.use_case.metric, "holdout_fingerprint": getattr(holdout, "fingerprint", ""),
              "data_fingerprint": getattr(data, "fingerprint", "") if data is not None else "",
              **{f"build.{k}": v for k, v in built.params.items()},
              **{f"gate.{k}": v for k, v in vars(src.bounds).items()}}
    now = int(time.time() * 1000)
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in outcome.metrics.items()])
    client.log_figure(run_id, comparison.figure(f"{name} v{src.parent.version}: {kind} vs parent"),
                      f"plots/variant_{kind}_vs_parent.png")
    client.log_dict(run_id, {"verdicts": [v.to_dict() for v in outcome.verdicts], "parent": comparison.parent,
                             "variant": comparison.variant}, "variant/comparison.json")
    client.set_tag(run_id, TAG_VARIANT_GATE, "passed" if outcome.passed else "refused")
    client.set_terminated(run_id, "FINISHED")


__all__ = ["COPIED_RUN_TAGS", "SERVING_RUNTIME", "BuiltVariant", "CompressOptions", "VariantOutcome",
           "build_variant", "kinds", "parent_for_builders"]
