"""What release managers do: register, promote under a policy, roll back, read the audit trail."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from civicml.errors import InvalidInput, NotFound
from civicml.settings import Settings
from registry.gates import GateVerdict, PromotionContext
from registry.policy import PromotionPolicy
from registry.store import LocalModel, ModelStore, ModelVersion, validate_alias

CHAMPION = "champion"
CHALLENGER = "challenger"
LINEAGE_TAGS = ("civicml.data_fingerprint", "civicml.code_version", "civicml.study", "civicml.use_case",
                "civicml.family")


@dataclass
class PromotionOutcome:
    name: str
    promoted: bool
    candidate: str
    previous: str | None
    verdicts: list[GateVerdict] = field(default_factory=list)

    @property
    def reason(self) -> str:
        failed = [v for v in self.verdicts if not v.passed]
        return "; ".join(f"{v.gate}: {v.detail}" for v in failed) or "all gates passed"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def register(model_uri: str, name: str, *, alias: str | None = CHALLENGER, settings: Settings | None = None,
             tags: dict[str, str] | None = None) -> ModelVersion:
    """Register ``model_uri`` as a new version of ``name``, with lineage tags; set ``alias`` on it."""
    settings = settings or Settings.from_env()
    store = ModelStore(settings)
    if alias:
        validate_alias(alias)
    lineage = {"civicml.registered_by": settings.user, "civicml.registered_at": _now(), "civicml.source": model_uri}
    version = store.register(model_uri, name, tags={**lineage, **(tags or {})})
    if version.run_id:
        run = store.client.get_run(version.run_id)
        for key in LINEAGE_TAGS:
            if key in run.data.tags:
                store.set_version_tag(name, version.version, key, run.data.tags[key])
        parent = run.data.tags.get("mlflow.parentRunId")
        if parent:
            store.set_version_tag(name, version.version, "civicml.study_run_id", parent)
    if alias:
        store.set_alias(name, alias, version.version)
    store.append_audit(name, {"action": "register", "who": settings.user, "when": _now(),
                              "version": version.version, "alias": alias, "source": model_uri})
    return store.get_version(name, version.version)


def resolve(name: str, ref: str = CHAMPION, settings: Settings | None = None) -> LocalModel:
    """A verified local copy of ``name`` at ``ref`` (an alias, or a version number)."""
    store = ModelStore(settings)
    version = store.get_version(name, ref) if str(ref).isdigit() else store.by_alias(name, ref)
    return store.fetch(name, version)


def promote(name: str, holdout: pd.DataFrame | None, target: str | None, *, policy: PromotionPolicy | None = None,
            from_alias: str = CHALLENGER, to_alias: str = CHAMPION, settings: Settings | None = None
            ) -> PromotionOutcome:
    """Move ``to_alias`` to the version at ``from_alias`` if every gate of ``policy`` passes.

    Both candidate and current champion are re-evaluated on ``holdout``. A refusal
    changes no alias; promotions and refusals are both written to the audit trail.
    """
    settings = settings or Settings.from_env()
    policy = policy or PromotionPolicy()
    store = ModelStore(settings)
    candidate_version = store.by_alias(name, from_alias) if not from_alias.isdigit() \
        else store.get_version(name, from_alias)
    champion_version = store.alias_or_none(name, to_alias)
    if champion_version and champion_version.version == candidate_version.version:
        raise InvalidInput(f"version {candidate_version.version} of '{name}' is already '{to_alias}'")
    if holdout is not None and target not in holdout.columns:
        raise InvalidInput(f"held-out data has no target column '{target}'")
    ctx = PromotionContext(name, store.fetch(name, candidate_version),
                           store.fetch(name, champion_version) if champion_version else None, holdout, target)
    verdicts = [gate.check(ctx) for gate in policy.gates()]
    outcome = PromotionOutcome(name, all(v.passed for v in verdicts), candidate_version.version,
                               champion_version.version if champion_version else None, verdicts)
    record = {"action": "promote" if outcome.promoted else "refuse", "who": settings.user, "when": _now(),
              "alias": to_alias, "from": outcome.previous, "to": outcome.candidate,
              "gates": [v.to_dict() for v in verdicts], "policy": policy.__dict__ if hasattr(policy, "__dict__")
              else str(policy)}
    if outcome.promoted:
        store.set_alias(name, to_alias, candidate_version.version)
        try:
            store.append_audit(name, record)
        except Exception:
            if champion_version:  # keep alias and trail consistent
                store.set_alias(name, to_alias, champion_version.version)
            else:
                store.delete_alias(name, to_alias)
            raise
    else:
        store.append_audit(name, record)
    return outcome


def rollback(name: str, *, alias: str = CHAMPION, settings: Settings | None = None) -> tuple[str, str]:
    """Return ``alias`` to the version it pointed at before its latest promotion; (from, to)."""
    settings = settings or Settings.from_env()
    store = ModelStore(settings)
    current = store.by_alias(name, alias)
    for record in reversed(store.audit_records(name)):
        if record.get("alias") == alias and record.get("action") in ("promote", "rollback") \
                and record.get("to") == current.version and record.get("from"):
            previous = record["from"]
            store.get_version(name, previous)
            store.set_alias(name, alias, previous)
            store.append_audit(name, {"action": "rollback", "who": settings.user, "when": _now(), "alias": alias,
                                      "from": current.version, "to": previous})
            return current.version, previous
    raise NotFound(f"'{alias}' of model '{name}' has no earlier version to roll back to")


def audit(name: str, settings: Settings | None = None) -> list[dict[str, Any]]:
    return ModelStore(settings).audit_records(name)


def versions(name: str, settings: Settings | None = None) -> list[ModelVersion]:
    return ModelStore(settings).versions(name)


def lineage(name: str, version: str, settings: Settings | None = None) -> dict[str, Any]:
    """The chain behind a version: data fingerprint -> training run -> study -> registered version."""
    store = ModelStore(settings)
    mv = store.get_version(name, version)
    out: dict[str, Any] = {"model": name, "version": mv.version, "aliases": list(mv.aliases),
                           "registered_by": mv.tags.get("civicml.registered_by"),
                           "registered_at": mv.tags.get("civicml.registered_at"), "sha256": mv.sha256,
                           "source": mv.source, "run_id": mv.run_id,
                           "data_fingerprint": mv.tags.get("civicml.data_fingerprint"),
                           "code_version": mv.tags.get("civicml.code_version"),
                           "study": mv.tags.get("civicml.study"), "study_run_id": mv.tags.get("civicml.study_run_id")}
    if mv.run_id:
        run = store.client.get_run(mv.run_id)
        out["run_metrics"] = {k: v for k, v in run.data.metrics.items() if not k.startswith("recall_")}
        out["run_params"] = dict(run.data.params)
    return out
