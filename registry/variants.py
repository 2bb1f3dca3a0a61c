"""Variants: compressed or converted copies of a registered version, built, measured, gated and registered.

A variant is a version of the *same* registered model, tagged::

    civicml.variant       = onnx | int8 | pruned | distilled | bf16
    civicml.variant_of    = <parent version>
    civicml.variant_gate  = passed | refused
    civicml.runtime       = onnx              (the serving runtime chosen for it: serving/onnx_runtime.py calls an
                                               ONNX Runtime session directly and answers in the parent's shape,
                                               any other pyfunc through pyfunc; every variant also loads with
                                               plain mlflow.pyfunc.load_model)

Aliases keep meaning the parent; a variant is chosen by kind
(:func:`find_variant`), so when ``champion`` moves, the variants served with it
are the new champion's. Only variants whose gate passed are ever found.

:func:`compress` builds one (``projects.compression``), logs it as its own MLflow
run in the parent's experiment (tags ``civicml.parent_run_id``, ``civicml.variant_of``),
measures it side by side with the parent on the policy's held-out set in one
process (size, latency p50/p95 at batch 1 and 64, quality, agreement, cosine; a
comparison plot), applies the policy's ``variants:`` section and registers it
through :func:`registry.register` (checksum, lineage, card, audit record). A
build that fails (``cannot convert: ...``) registers nothing and leaves no run.

The ``variants:`` section of a promotion policy file (all fields optional)::

    variants:
      max_quality_loss: 0.02      # metric points the variant may lose vs its parent (held-out set)
      min_agreement: 0.95         # share of held-out rows with the parent's answer
      min_speedup: 1.0            # parent p50 / variant p50 at `speedup_batch`
      speedup_batch: 64           # 1, 32 or 64
      min_size_reduction: null    # parent bytes / variant bytes
      min_cosine: null            # mean cosine of class probabilities
      kinds:                      # per-kind overrides of the fields above
        int8: {min_speedup: 1.4, min_size_reduction: 3.5, max_quality_loss: 0.005}
        onnx: {max_quality_loss: 0.0, min_agreement: 1.0, speedup_batch: 1}
      build: [onnx]               # kinds `promote` builds for a new champion that has no passing one
                                  # ("all": every kind its family supports); default: none

Promotion (:func:`registry.promote`): the champion moves with its variants, because serving finds
them by kind on the champion's version. When the policy's ``build`` asks, promotion builds and
gates the candidate's missing variants (:func:`build_for_promotion`) after its own gates passed and
before the alias moves; a variant that is refused, or cannot be built, never blocks the promotion
(the gate report says why) and is never served.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
import yaml

from civicml.access import require
from civicml.errors import InvalidInput, NotFound
from civicml.settings import Settings
from registry.gates import GateVerdict
from registry.store import ModelStore, ModelVersion

TAG_VARIANT = "civicml.variant"
TAG_VARIANT_OF = "civicml.variant_of"
TAG_GATE = "civicml.variant_gate"
TAG_RUNTIME = "civicml.runtime"
TAG_PARENT_RUN = "civicml.parent_run_id"
TAG_VARIANT_RUN = "civicml.variant_run_id"
SERVING_RUNTIME = "onnx"  # never wrong for a pyfunc (it falls back to pyfunc's path), faster for ORT graphs
COPIED_RUN_TAGS = ("civicml.use_case", "civicml.family", "civicml.data_fingerprint", "civicml.code_version")


# -- policy -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VariantBounds:
    max_quality_loss: float = 0.02
    min_agreement: float = 0.95
    min_speedup: float | None = None
    speedup_batch: int = 64
    min_size_reduction: float | None = None
    min_cosine: float | None = None

    def gates(self, comparison) -> list[GateVerdict]:
        c = comparison
        within = c.quality_loss <= self.max_quality_loss + 1e-12
        out = [GateVerdict(f"{c.metric} loss <= {self.max_quality_loss}", within, c.quality_loss, self.max_quality_loss,
                           f"parent {c.parent[c.metric]:.4f}, variant {c.variant[c.metric]:.4f} on {c.rows} "
                           f"held-out rows"),
               GateVerdict(f"agreement >= {self.min_agreement}", c.agreement >= self.min_agreement, c.agreement,
                           self.min_agreement, f"same answer as the parent on {c.agreement:.2%} of held-out rows")]
        if self.min_cosine is not None:
            cos = c.cosine if c.cosine is not None else float("nan")
            out.append(GateVerdict(f"cosine >= {self.min_cosine}", cos >= self.min_cosine, cos, self.min_cosine,
                                   "mean cosine of class probabilities"))
        if self.min_speedup is not None:
            s = c.speedup(self.speedup_batch)
            out.append(GateVerdict(f"speed-up b{self.speedup_batch} >= {self.min_speedup}", s >= self.min_speedup, s,
                                   self.min_speedup, f"p50 at batch {self.speedup_batch}: parent "
                                   f"{c.parent[f'latency_b{self.speedup_batch}_p50_ms']:.2f} ms, variant "
                                   f"{c.variant[f'latency_b{self.speedup_batch}_p50_ms']:.2f} ms"))
        if self.min_size_reduction is not None:
            r = c.size_reduction
            out.append(GateVerdict(f"size reduction >= {self.min_size_reduction}", r >= self.min_size_reduction, r,
                                   self.min_size_reduction, f"parent {c.parent['size_bytes']:.0f} B, variant "
                                   f"{c.variant['size_bytes']:.0f} B"))
        return out


# Built in: an ONNX conversion must give exactly the parent's answers; the rest may lose a little.
KIND_DEFAULTS: dict[str, dict[str, Any]] = {"onnx": {"max_quality_loss": 0.0, "min_agreement": 1.0}}
_BOUND_FIELDS = [f.name for f in fields(VariantBounds)]


@dataclass(frozen=True)
class VariantPolicy:
    base: Mapping[str, Any] = field(default_factory=dict)
    kinds: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    source: str | None = None
    build: tuple[str, ...] = ()  # kinds promotion builds; ("all",) for every kind the family supports

    def bounds(self, kind: str) -> VariantBounds:
        return replace(VariantBounds(), **{**KIND_DEFAULTS.get(kind, {}), **self.base, **self.kinds.get(kind, {})})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, where: str = "policy", source: str | None = None):
        from projects.compression import KINDS

        if data is not None and not isinstance(data, Mapping):
            raise InvalidInput(f"{where}: field 'variants' must be a mapping")
        data = dict(data or {})
        build = _build_kinds(data.pop("build", None), where, KINDS)
        kinds = data.pop("kinds", None) or {}
        if not isinstance(kinds, dict):
            raise InvalidInput(f"{where}: field 'variants.kinds' must map variant kinds to bounds")
        for kind in kinds:
            if kind not in KINDS:
                raise InvalidInput(f"{where}: unknown variant kind 'variants.kinds.{kind}' (known: {', '.join(KINDS)})")
        base = _bounds(data, f"{where}: variants")
        return cls(base, {k: _bounds(v or {}, f"{where}: variants.kinds.{k}") for k, v in kinds.items()}, source,
                   build)

    @classmethod
    def from_yaml(cls, path: str | Path | None) -> "VariantPolicy":
        if path is None or not Path(path).exists():
            return cls()
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as err:
            raise InvalidInput(f"policy file {path}: not valid YAML ({err.__class__.__name__})") from None
        return cls.from_dict(data.get("variants") if isinstance(data, dict) else None, f"policy file {path}",
                             str(path))


def _build_kinds(raw: Any, where: str, known) -> tuple[str, ...]:
    if raw is None:
        return ()
    if raw == "all":
        return ("all",)
    raw = [raw] if isinstance(raw, str) else raw
    if not isinstance(raw, list) or not all(isinstance(k, str) for k in raw):
        raise InvalidInput(f"{where}: field 'variants.build' must list variant kinds (or be 'all'), got {raw!r}")
    for kind in raw:
        if kind not in known:
            raise InvalidInput(f"{where}: unknown variant kind '{kind}' in 'variants.build' (known: "
                               f"{', '.join(known)}, or all)")
    return tuple(dict.fromkeys(raw))


def _bounds(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise InvalidInput(f"{where}: expected a mapping of {', '.join(_BOUND_FIELDS)}")
    out = {}
    for key, value in raw.items():
        if key not in _BOUND_FIELDS:
            import difflib

            close = difflib.get_close_matches(str(key), _BOUND_FIELDS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise InvalidInput(f"{where}: unknown field '{key}'{hint} (known: {', '.join(_BOUND_FIELDS)})")
        if value is None and key.startswith("min_") and key not in ("min_agreement",):
            out[key] = None
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidInput(f"{where}: field '{key}' must be a number, got {value!r}")
        if key == "speedup_batch" and value not in (1, 32, 64):
            raise InvalidInput(f"{where}: field 'speedup_batch' must be 1, 32 or 64, got {value!r}")
        if value < 0:
            raise InvalidInput(f"{where}: field '{key}' must be >= 0, got {value!r}")
        out[key] = int(value) if key == "speedup_batch" else float(value)
    return out


# -- outcome ------------------------------------------------------------------------------------------
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


# -- lookup -------------------------------------------------------------------------------------------
def variants_of(name: str, parent_version: str, settings: Settings | None = None) -> list[ModelVersion]:
    """Every registered variant of ``parent_version`` (an alias or number), newest first, passed or refused."""
    settings = settings or Settings.from_env()
    require(settings, "read")
    store = ModelStore(settings)
    return _variants_in(store, name, _version(store, name, parent_version).version)


def find_variant(name: str, parent_version: str, kind: str, settings: Settings | None = None) -> ModelVersion:
    """The newest ``kind`` variant of ``parent_version`` whose gate passed; :class:`NotFound` if there is none."""
    found = [v for v in variants_of(name, parent_version, settings) if v.tags.get(TAG_VARIANT) == kind]
    passed = [v for v in found if v.tags.get(TAG_GATE) == "passed"]
    if passed:
        return passed[0]
    parent = found[0].tags[TAG_VARIANT_OF] if found else parent_version
    if found:
        raise NotFound(f"model '{name}' version {parent}: its '{kind}' variant (version {found[0].version}) was "
                       f"refused by its gate and cannot be served")
    raise NotFound(f"model '{name}' version {parent} has no '{kind}' variant "
                   f"(build one with `civicml compress {name} {parent} --variant {kind}`)")


def _variants_in(store: ModelStore, name: str, parent_version: str | None = None) -> list[ModelVersion]:
    return [v for v in reversed(store.versions(name)) if TAG_VARIANT in v.tags and not v.pending
            and (parent_version is None or v.tags.get(TAG_VARIANT_OF) == parent_version)]


# -- what a release manager reads -------------------------------------------------------------------
_FIGURES = ("size_bytes", "parent_size_bytes", "size_reduction", "latency_b1_p50_ms", "latency_b64_p50_ms",
            "parent_latency_b1_p50_ms", "parent_latency_b64_p50_ms", "speedup_b1", "speedup_b64", "quality_loss",
            "agreement", "cosine")


def summary_of(store: ModelStore, version: ModelVersion) -> dict[str, Any]:
    """One variant as ``models show``, lineage, the card and the gate report show it: kind, parent, gate
    verdict, and the figures its run measured beside the parent (size, p50 latency at batch 1 and 64,
    quality on the held-out set, agreement with the parent)."""
    tags = version.tags
    run = store.run_or_none(tags.get(TAG_VARIANT_RUN) or version.run_id)
    measured = dict(run.data.metrics) if run is not None else {}
    own = [k.removeprefix("parent_") for k in measured if k.startswith("parent_")]
    metric = (run.data.params.get("metric") if run is not None else None) or next(
        (k for k in own if k in measured and k != "size_bytes" and not k.startswith("latency_")), None)
    try:
        verdicts = json.loads(tags.get("civicml.variant_verdicts") or "[]")
    except ValueError:  # cut at the tag's length limit: the run's variant/comparison.json has them all
        verdicts = []
    return {"version": version.version, "kind": tags.get(TAG_VARIANT), "variant_of": tags.get(TAG_VARIANT_OF),
            "gate": tags.get(TAG_GATE), "aliases": list(version.aliases), "run_id": run.info.run_id if run else None,
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
    for v in _variants_in(store, name):
        out.setdefault(v.tags.get(TAG_VARIANT_OF), []).append(summary_of(store, v))
    return out


def variant_facts(store: ModelStore, name: str, version: ModelVersion) -> dict[str, Any]:
    """For lineage and the model card: what variant ``version`` is (``variant``), or its variants (``variants``)."""
    if TAG_VARIANT in version.tags:
        return {"variant": summary_of(store, version)}
    return {"variants": [summary_of(store, v) for v in _variants_in(store, name, version.version)]}


def _card_lists_variants(store: ModelStore, name: str, parent_version: str) -> None:
    """The parent's model card, written again with its variants (a new variant changes nothing else)."""
    import logging

    from civicml.errors import CivicMLError
    from registry.lifecycle import rewrite_card_variants

    try:
        rewrite_card_variants(store, name, store.get_version(name, parent_version))
    except CivicMLError as err:  # the variant is registered; a card that cannot be rewritten says so here
        logging.getLogger("civicml.registry").warning("model card of version %s not updated: %s", parent_version,
                                                      err)


# -- promotion ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Holdout:
    """A held-out frame as :func:`compress` reads one (a promotion holds a frame, not a Dataset)."""

    frame: pd.DataFrame
    target: str
    fingerprint: str


def build_for_promotion(name: str, version: str, policy: VariantPolicy, holdout: pd.DataFrame | None,
                        target: str | None, fingerprint: str | None, settings: Settings) -> tuple[list[str], list[str]]:
    """Build and gate the kinds ``policy.build`` asks for that ``version`` has no passing variant of, on the
    promotion's held-out set; (versions registered, notes). Nothing here raises: a kind that cannot be
    built, or a caller who may not register versions, is a note in the gate report, never a refusal."""
    from civicml.errors import CivicMLError

    if not policy.build:
        return [], []
    try:
        wanted = kinds(name, version, settings) if policy.build == ("all",) else list(policy.build)
        require(settings, "register")
    except CivicMLError as err:
        return [], [f"variants not built: {err}"]
    store = ModelStore(settings)
    have = {v.tags.get(TAG_VARIANT) for v in _variants_in(store, name, version) if v.tags.get(TAG_GATE) == "passed"}
    frame = _Holdout(holdout, target, fingerprint or "") if holdout is not None and target else None
    built, notes = [], []
    for kind in wanted:
        if kind in have:
            continue
        try:
            outcome = compress(name, version, kind, settings, holdout=frame, policy=policy)
        except CivicMLError as err:
            notes.append(f"variant {kind} not built: {err}")
            continue
        except Exception as err:  # noqa: BLE001 - a variant never blocks its parent's promotion
            notes.append(f"variant {kind} not built: {type(err).__name__}: {err}")
            continue
        if outcome.version is not None:
            built.append(outcome.version.version)
    return built, notes


def _version(store: ModelStore, name: str, ref: str) -> ModelVersion:
    return store.get_version(name, ref) if str(ref).isdigit() else store.by_alias(name, str(ref))


# -- build -------------------------------------------------------------------------------------------
def kinds(name: str, version: str, settings: Settings | None = None) -> list[str]:
    """The variant kinds ``version``'s family supports."""
    from projects.compression import kinds_for

    settings = settings or Settings.from_env()
    require(settings, "read")
    store = ModelStore(settings)
    parent = _version(store, name, version)
    local = store.fetch(name, parent)
    return kinds_for(_parent(parent, local, None, None))


def compress(name: str, version: str, kind: str, settings: Settings | None = None, **options) -> VariantOutcome:
    """Build the ``kind`` variant of ``name`` ``version``, measure it beside its parent, gate and register it
    (options: see :func:`_compress`). The variant's run is logged through MLflow's fluent API (its model
    flavours take no client), pointed at ``settings``' stores for this call only."""
    from civicml.tracking import fluent

    settings = settings or Settings.from_env()
    with fluent(settings):
        return _compress(name, version, kind, settings, **options)


def _compress(name: str, version: str, kind: str, settings: Settings, *,
              data=None, holdout=None, policy: VariantPolicy | None = None,
              build_settings: Mapping[str, Any] | None = None, repeats: Mapping[int, int] | None = None,
              register_refused: bool = True, also_on: Mapping[str, Any] | None = None) -> VariantOutcome:
    """Build the ``kind`` variant of ``name`` ``version``, measure it beside its parent, gate and register it.

    ``data`` (a Dataset, or source files) is what calibration, fine-tuning and pruning choices use; by
    default the parent's own training sources, re-read from its run's
    ``data/dataset.json``, split as its training run split them. ``holdout`` (a
    Dataset, or source files) is what the gate scores both on; by default the policy's named held-out
    set. A refused variant is registered with ``civicml.variant_gate=refused`` (so
    the release manager sees why) unless ``register_refused`` is false; it is
    never found by :func:`find_variant`. ``also_on`` names more held-out Datasets (e.g.
    ``{"never_seen": ...}``) on which the quality bound must hold too.
    """
    import mlflow

    from civicml.tracking import experiment_id as find_experiment
    from projects import get_use_case, load_dataset
    from projects.compression import KINDS, build, measure
    from registry.lifecycle import register

    require(settings, "register")
    if kind not in KINDS:
        raise InvalidInput(f"unknown variant kind '{kind}' (known: {', '.join(KINDS)})")
    store = ModelStore(settings)
    parent = _version(store, name, version)
    if TAG_VARIANT in parent.tags:
        raise InvalidInput(f"model '{name}' version {parent.version} is itself a '{parent.tags[TAG_VARIANT]}' "
                           f"variant of version {parent.tags.get(TAG_VARIANT_OF)}; compress the parent")
    use_case_name = parent.tags.get("civicml.use_case")
    if not use_case_name:
        raise InvalidInput(f"model '{name}' version {parent.version} records no use case (tag civicml.use_case)")
    use_case = get_use_case(use_case_name)
    run = store.get_run(parent.run_id) if parent.run_id else None
    if policy is None:
        policy = VariantPolicy.from_yaml(getattr(use_case, "policy_file", None))
    bounds = policy.bounds(kind)
    if isinstance(data, (list, tuple)):  # source files: the use case reads them
        data = load_dataset(use_case, data)
    if isinstance(holdout, (list, tuple)):
        holdout = load_dataset(use_case, holdout)
    also_on = {k: load_dataset(use_case, v) if isinstance(v, (list, tuple)) else v for k, v in (also_on or {}).items()}
    if data is None and run is not None:
        data = _training_data(store, run, use_case)
    if holdout is None:
        holdout = _policy_holdout(use_case, settings)
    local = store.fetch(name, parent)
    seed = int(run.data.params.get("seed", 0)) if run is not None else 0
    split = use_case.split(data, seed=seed) if data is not None else (None, None)
    built = build(kind, _parent(parent, local, *split), build_settings)  # CannotCompress: nothing made yet

    experiment_id = run.info.experiment_id if run is not None else find_experiment(settings, use_case.name)
    tags = {TAG_VARIANT: kind, TAG_VARIANT_OF: parent.version, "civicml.registered_model": name}
    if run is not None:
        tags[TAG_PARENT_RUN] = run.info.run_id
        tags.update({k: run.data.tags[k] for k in COPIED_RUN_TAGS if k in run.data.tags})
    active = mlflow.start_run(experiment_id=experiment_id, run_name=f"{name} v{parent.version} {kind}", tags=tags,
                              nested=mlflow.active_run() is not None)
    run_id = active.info.run_id
    try:
        mlflow.log_params({"kind": kind, "method": built.method[:500], "parent_version": parent.version,
                           "metric": use_case.metric,
                           "holdout_fingerprint": getattr(holdout, "fingerprint", ""),
                           "data_fingerprint": getattr(data, "fingerprint", "") if data is not None else "",
                           **{f"build.{k}": v for k, v in built.params.items()},
                           **{f"gate.{k}": v for k, v in vars(bounds).items()}})
        metadata = {**dict(local.metadata), "variant": kind, "variant_of": parent.version,
                    "variant_method": built.method}
        model_uri = built.log("model", metadata)
        with tempfile.TemporaryDirectory() as tmp:
            variant_path = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=tmp))
            comparison = measure(local.path, variant_path, holdout.frame, holdout.target, use_case.metric,
                                 repeats=dict(repeats or {}))
            verdicts = bounds.gates(comparison)
            extra: dict[str, float] = {}
            for label, other in (also_on or {}).items():
                more = measure(local.path, variant_path, other.frame, other.target, use_case.metric,
                               repeats={1: 1, 64: 1})
                extra.update({f"{label}_{use_case.metric}": more.variant[use_case.metric],
                              f"{label}_parent_{use_case.metric}": more.parent[use_case.metric],
                              f"{label}_quality_loss": more.quality_loss, f"{label}_agreement": more.agreement})
                verdicts.append(GateVerdict(f"{label}: {use_case.metric} loss <= {bounds.max_quality_loss}",
                                            more.quality_loss <= bounds.max_quality_loss + 1e-12, more.quality_loss,
                                            bounds.max_quality_loss,
                                            f"parent {more.parent[use_case.metric]:.4f}, variant "
                                            f"{more.variant[use_case.metric]:.4f} on {more.rows} rows of {label}"))
        passed = all(v.passed for v in verdicts)
        metrics = {**comparison.to_metrics(), **extra, **{f"build_{k}": v for k, v in built.figures.items()},
                   "gate_passed": float(passed)}
        mlflow.log_metrics(metrics)
        mlflow.log_figure(comparison.figure(f"{name} v{parent.version}: {kind} vs parent"),
                          f"plots/variant_{kind}_vs_parent.png")
        mlflow.log_dict({"verdicts": [v.to_dict() for v in verdicts], "parent": comparison.parent,
                         "variant": comparison.variant}, "variant/comparison.json")
        mlflow.set_tag(TAG_GATE, "passed" if passed else "refused")
        mlflow.end_run("FINISHED")
    except BaseException:
        mlflow.end_run("FAILED")
        store.client.delete_run(run_id)  # a failed command leaves nothing behind
        raise
    finally:
        import matplotlib.pyplot as plt

        plt.close("all")
    outcome = VariantOutcome(name, parent.version, kind, built.method, None, metrics, verdicts, run_id)
    if passed or register_refused:
        version_tags = {TAG_VARIANT: kind, TAG_VARIANT_OF: parent.version, TAG_GATE: "passed" if passed else "refused",
                        TAG_RUNTIME: SERVING_RUNTIME, TAG_VARIANT_RUN: run_id,
                        "civicml.variant_verdicts": json.dumps([v.to_dict() for v in verdicts])[:4900]}
        outcome.version = register(model_uri, name, alias=None, settings=settings, tags=version_tags)
        _card_lists_variants(store, name, parent.version)
    return outcome


def compress_all(name: str, version: str, settings: Settings | None = None, **options) -> list[VariantOutcome | str]:
    """Every kind the family supports; a kind that cannot be built gives its one-line reason instead."""
    from projects.compression import CannotCompress

    out: list[VariantOutcome | str] = []
    for kind in kinds(name, version, settings):
        try:
            out.append(compress(name, version, kind, settings, **options))
        except CannotCompress as err:
            out.append(f"{kind}: {err}")
    return out


def _parent(version: ModelVersion, local, train, valid):
    from projects import get_use_case
    from projects.compression import Parent

    return Parent(local.path, get_use_case(version.tags.get("civicml.use_case", "")),
                  version.tags.get("civicml.family") or str(local.metadata.get("family", "")), local.metadata,
                  train, valid)


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
    recorded = run.data.tags.get("civicml.data_fingerprint")
    if recorded and dataset.fingerprint != recorded:
        return None  # the files changed since training: not the data the parent learned from
    return dataset


def _policy_holdout(use_case, settings: Settings):
    """The held-out set the use case's promotion policy names (as `civicml promote` builds it)."""
    from registry.policy import PromotionPolicy

    policy_file = getattr(use_case, "policy_file", None)
    spec = PromotionPolicy.from_yaml(policy_file).holdout if policy_file and Path(policy_file).exists() else None
    if spec is not None:
        folder = settings.ensure_home() / "data" / use_case.name / spec.label
        return use_case.holdout(folder, seed=spec.seed, n=spec.rows)
    return use_case.holdout(settings.ensure_home() / "data" / use_case.name / "holdout")


__all__ = ["TAG_GATE", "TAG_RUNTIME", "TAG_VARIANT", "TAG_VARIANT_OF", "VariantBounds", "VariantOutcome",
           "VariantPolicy", "build_for_promotion", "compress", "compress_all", "find_variant", "kinds",
           "summary_of", "variant_facts", "variant_summaries", "variants_of"]
