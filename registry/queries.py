"""What anyone may read: versions, aliases, lineage, approvals, model cards, the audit trail.

Reading needs the ``read`` role (every role has it); :func:`resolve` needs ``predict``.
A version whose registration has not completed is invisible here.
"""

from __future__ import annotations

import hashlib
from typing import Any

from civicml.errors import IntegrityError, NotFound
from civicml.settings import Settings
from civicml.tags import (TAG_CODE_VERSION, TAG_DATA_FINGERPRINT, TAG_FAMILY, TAG_MODEL_CARD,
                          TAG_MODEL_CARD_SHA256, TAG_REGISTERED_AT, TAG_REGISTERED_BY, TAG_STUDY,
                          TAG_STUDY_RUN_ID, TAG_USE_CASE)
from registry.guard import authorize, verified
from registry.store import LocalModel, ModelStore, ModelVersion
from registry.variant_lookup import variant_facts

CHAMPION = "champion"
CHALLENGER = "challenger"
RESERVED_ALIASES = (CHAMPION,)  # compared case-insensitively: 'Champion' is 'champion'
LINEAGE_TAGS = (TAG_DATA_FINGERPRINT, TAG_CODE_VERSION, TAG_STUDY, TAG_USE_CASE,
                TAG_FAMILY)


def resolve(name: str, ref: str = CHAMPION, settings: Settings | None = None) -> LocalModel:
    """A verified local copy of ``name`` at ``ref`` (an alias, or a version number)."""
    settings = settings or Settings.from_env()
    store = ModelStore(settings)
    who = authorize(settings, "predict", name, store, ref=str(ref))
    return verified(store, who, name, _complete(store, name, ref), "resolve")


def version_of(name: str, ref: str | int, settings: Settings | None = None) -> ModelVersion:
    """The version of ``name`` that ``ref`` names: a version number, else an alias (the one rule:
    :meth:`ModelStore.version_at`). A version whose registration has not completed is not found."""
    settings = settings or Settings.from_env()
    store = ModelStore(settings)
    authorize(settings, "read", name, store)
    return _complete(store, name, ref)


def _complete(store: ModelStore, name: str, ref: str | int) -> ModelVersion:
    version = store.version_at(name, ref)
    if version.pending:
        raise NotFound(f"model '{name}' has no version {version.version} (its registration has not completed)")
    return version


def audit(name: str, settings: Settings | None = None) -> list[dict[str, Any]]:
    settings = settings or Settings.from_env()
    store = ModelStore(settings)
    authorize(settings, "read", name, store)
    return store.audit_records(name)


def versions(name: str, settings: Settings | None = None) -> list[ModelVersion]:
    settings = settings or Settings.from_env()
    store = ModelStore(settings)
    authorize(settings, "read", name, store)
    return [v for v in store.versions(name) if not v.pending]


def models(settings: Settings | None = None) -> dict[str, dict[str, str]]:
    """Registered model names and their aliases (alias -> version)."""
    settings = settings or Settings.from_env()
    authorize(settings, "read")
    store = ModelStore(settings)
    return {name: dict(sorted(store.aliases(name).items())) for name in store.models()}


def show(name: str, settings: Settings | None = None) -> list[dict[str, Any]]:
    """Every version of ``name`` with what a release manager asks about it: aliases, who registered it,
    source run and its metrics, data fingerprint, code version, approvals, its latest gate results."""
    settings = settings or Settings.from_env()
    store = ModelStore(settings)
    authorize(settings, "read", name, store)
    trail = store.audit_records(name)
    out = []
    for mv in (v for v in store.versions(name) if not v.pending):
        gates = None
        for r in trail:
            if r.get("action") in ("promote", "refuse") and r.get("to") == mv.version:
                gates = {"action": r["action"], "when": r["when"], "who": r["who"], "gates": r.get("gates", [])}
        run = store.run_or_none(mv.run_id)  # a deleted run leaves the version readable
        metrics = {k: v for k, v in run.data.metrics.items() if not k.startswith("recall_")} if run else {}
        out.append({"version": mv.version, "aliases": list(mv.aliases), "registered_by": mv.tags.get(
            TAG_REGISTERED_BY), "registered_at": mv.tags.get(TAG_REGISTERED_AT),
            "run_id": mv.run_id, "family": mv.tags.get(TAG_FAMILY),
            "data_fingerprint": mv.tags.get(TAG_DATA_FINGERPRINT),
            "code_version": mv.tags.get(TAG_CODE_VERSION), "study": mv.tags.get(TAG_STUDY),
            "sha256": mv.sha256, "metrics": metrics, "approved_by": [r["who"] for r in approval_records(store, name, mv)],
            "last_gates": gates, "model_card": mv.tags.get(TAG_MODEL_CARD)})
    return out


def approvals(name: str, version: str, settings: Settings | None = None) -> list[dict[str, Any]]:
    """The approval records of ``version`` (one per distinct approver), from the audit trail."""
    settings = settings or Settings.from_env()
    store = ModelStore(settings)
    authorize(settings, "read", name, store)
    return approval_records(store, name, store.get_version(name, version))


def approval_records(store: ModelStore, name: str, version: ModelVersion) -> list[dict[str, Any]]:
    seen: dict[str, dict] = {}
    for r in store.audit_records(name):
        # an approval binds to the version's content: a version is never re-pointed, but be explicit
        if r.get("action") == "approve" and r.get("version") == version.version \
                and r.get("sha256") == version.sha256:
            seen.setdefault(r["who"], r)
    return list(seen.values())


def model_card(name: str, version: str, settings: Settings | None = None) -> str:
    """The latest model card of ``version``, verified against its recorded SHA-256."""
    settings = settings or Settings.from_env()
    store = ModelStore(settings)
    authorize(settings, "read", name, store)
    mv = store.get_version(name, version)
    uri = mv.tags.get(TAG_MODEL_CARD)
    if not uri:
        raise NotFound(f"model '{name}' version {mv.version} has no model card")
    text = store.read_run_text(uri)
    if hashlib.sha256(text.encode()).hexdigest() != mv.tags.get(TAG_MODEL_CARD_SHA256):
        raise IntegrityError(f"model card of '{name}' version {mv.version} does not match its recorded checksum")
    return text


def lineage(name: str, version: str, settings: Settings | None = None) -> dict[str, Any]:
    """The chain behind a version: data fingerprint -> training run -> study -> registered version."""
    settings = settings or Settings.from_env()
    store = ModelStore(settings)
    authorize(settings, "read", name, store)
    mv = store.get_version(name, version)
    aliases = sorted(a for a, v in store.aliases(name).items() if v == mv.version)
    out: dict[str, Any] = {"model": name, "version": mv.version, "aliases": aliases,
                           "registered_by": mv.tags.get(TAG_REGISTERED_BY),
                           "registered_at": mv.tags.get(TAG_REGISTERED_AT), "sha256": mv.sha256,
                           "source": mv.source, "run_id": mv.run_id,
                           "data_fingerprint": mv.tags.get(TAG_DATA_FINGERPRINT),
                           "code_version": mv.tags.get(TAG_CODE_VERSION),
                           "use_case": mv.tags.get(TAG_USE_CASE), "family": mv.tags.get(TAG_FAMILY),
                           "study": mv.tags.get(TAG_STUDY), "study_run_id": mv.tags.get(TAG_STUDY_RUN_ID),
                           "model_card": mv.tags.get(TAG_MODEL_CARD),
                           "approved_by": [r["who"] for r in approval_records(store, name, mv)]}
    run = store.run_or_none(mv.run_id)
    if run is not None:
        out["experiment_id"] = run.info.experiment_id
        out["run_metrics"] = {k: v for k, v in run.data.metrics.items() if not k.startswith("recall_")}
        out["run_params"] = dict(run.data.params)
    out.update(variant_facts(store, name, mv))  # what variant it is, or which variants it has
    study_run = store.run_or_none(out["study_run_id"])  # lineage still prints what it has
    if study_run is not None:
        out["study_run_name"] = study_run.info.run_name
        out["study"] = out["study"] or study_run.data.tags.get(TAG_STUDY)
    return out

