"""What release managers do: register, approve, promote under a policy, roll back (reading: queries.py).

Every function checks the caller's role first (:mod:`civicml.access`), and every
change writes an append-only audit record (registered-model tags
``civicml.audit.<time>.<ns>.<random>``, one JSON record each) saying who, when,
from, to, and why.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from civicml.errors import InvalidInput, NotFound
from civicml.settings import Settings
from registry import card as cards, rules
from civicml.fingerprint import frame_fingerprint
from civicml.access import Identity, require
from registry.gates import GateVerdict, PromotionContext
from registry.policy import PromotionPolicy
from registry.queries import CHALLENGER, CHAMPION, LINEAGE_TAGS, TAG_CARD, TAG_CARD_SHA, _approvals
from registry.store import TAG_SHA, LocalModel, ModelStore, ModelVersion, validate_alias




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


def _record(who: Identity, action: str, **fields) -> dict[str, Any]:
    return {"action": action, **who.to_record(), "when": _now(), **fields}


def _champion_alias_guard(alias: str) -> None:
    if alias == CHAMPION:
        raise InvalidInput(f"'{CHAMPION}' moves only through `promote` (gates) and `rollback`")


# -- register -----------------------------------------------------------------------------------
def register(model_uri: str, name: str, *, alias: str | None = CHALLENGER, settings: Settings | None = None,
             tags: dict[str, str] | None = None, holdout: pd.DataFrame | None = None, target: str | None = None,
             report_by: tuple[str, ...] = ()) -> ModelVersion:
    """Register ``model_uri`` as a new version of ``name``, with lineage tags and a model card; set ``alias``.

    Either every step completes (version, checksum, lineage, card, alias, audit
    record) or the version is removed again. With ``holdout``/``target`` the card's
    figures come from that data set, else from the source run's logged metrics.
    """
    settings = settings or Settings.from_env()
    who = require(settings, "register")
    if alias:
        validate_alias(alias)
        _champion_alias_guard(alias)
    store = ModelStore(settings)
    version_tags = {"civicml.registered_by": who.name, "civicml.registered_at": _now(),
                    "civicml.registered_auth": who.auth, "civicml.source": model_uri}
    run_id = store.run_id_of(model_uri)
    run = store.get_run(run_id, model_uri) if run_id else None
    if run is not None:
        version_tags.update({k: run.data.tags[k] for k in LINEAGE_TAGS if k in run.data.tags})
        parent = run.data.tags.get("mlflow.parentRunId")
        if parent:
            version_tags["civicml.study_run_id"] = parent
    version_tags.update(tags or {})

    def complete(version: ModelVersion) -> None:
        evaluation = None
        if holdout is not None and target is not None:
            local = store.fetch(name, version)
            evaluation = _evaluate_local(local, holdout, target, report_by, _holdout_label(holdout, None))
        elif run is not None:
            evaluation = cards.from_run_metrics(run.data.metrics, _task(run.data.tags, None),
                                                f"validation split of run {run.info.run_id}")
        _write_card(store, name, store.get_version(name, version.version), run, evaluation,
                    f"Registered {_now()[:10]} by {who.name}", "registered")
        if alias:
            store.set_alias(name, alias, version.version)
        store.append_audit(name, _record(who, "register", version=version.version, alias=alias,
                                         source=model_uri, sha256=version.sha256, run_id=version.run_id))
        rules.log_insights(store, name, version, holdout, target)  # rules + charts + map; never fails this

    version = store.register(model_uri, name, tags=version_tags, complete=complete)
    return version


# -- read ---------------------------------------------------------------------------------------
def set_alias(name: str, alias: str, version: str, settings: Settings | None = None) -> None:
    """Point ``alias`` (``challenger`` or any named alias, never ``champion``) at ``version``."""
    settings = settings or Settings.from_env()
    who = require(settings, "set_alias")
    validate_alias(alias)
    _champion_alias_guard(alias)
    store = ModelStore(settings)
    target = store.get_version(name, version)
    previous = store.alias_or_none(name, alias)
    store.set_alias(name, alias, target.version)
    store.append_audit(name, _record(who, "alias", alias=alias, **{"from": previous.version if previous else None},
                                     to=target.version))


def approve(name: str, version: str, settings: Settings | None = None, note: str | None = None) -> list[str]:
    """Record the caller's approval of ``version``; return everyone who approved it so far."""
    settings = settings or Settings.from_env()
    who = require(settings, "approve")
    store = ModelStore(settings)
    mv = store.get_version(name, version)
    already = _approvals(store, name, mv)
    if any(r["who"] == who.name for r in already):
        raise InvalidInput(f"{who.name} already approved '{name}' version {mv.version}")
    record = _record(who, "approve", version=mv.version, sha256=mv.sha256)
    if note:
        record["note"] = note[:500]
    store.append_audit(name, record)
    return [r["who"] for r in already] + [who.name]


def promote(name: str, holdout: pd.DataFrame | None, target: str | None, *, policy: PromotionPolicy | None = None,
            from_alias: str = CHALLENGER, to_alias: str = CHAMPION, settings: Settings | None = None,
            holdout_name: str | None = None) -> PromotionOutcome:
    """Move ``to_alias`` to the version at ``from_alias`` if every gate of ``policy`` passes.

    Both candidate and current champion are re-evaluated on ``holdout`` (a frame, or
    a Dataset). A refusal changes no alias; promotions and refusals are both
    written to the audit trail, with each gate's figure and verdict.
    """
    settings = settings or Settings.from_env()
    who = require(settings, "promote")
    policy = policy or PromotionPolicy()
    if policy.model and policy.model != name:
        raise InvalidInput(f"policy {policy.source or ''} governs model '{policy.model}', not '{name}'".replace("  ", " "))
    store = ModelStore(settings)
    candidate_version = store.get_version(name, from_alias) if str(from_alias).isdigit() \
        else store.by_alias(name, from_alias)
    champion_version = store.alias_or_none(name, to_alias)
    if champion_version and champion_version.version == candidate_version.version:
        raise InvalidInput(f"version {candidate_version.version} of '{name}' is already '{to_alias}'")
    frame, fingerprint = _holdout_frame(holdout)
    if frame is not None and target not in frame.columns:
        raise InvalidInput(f"held-out data has no target column '{target}'")
    label = holdout_name or (policy.holdout.label if policy.holdout else None) or _holdout_label(frame, fingerprint)
    candidate_local = store.fetch(name, candidate_version)
    ctx = PromotionContext(name, candidate_local,
                           store.fetch(name, champion_version) if champion_version else None, frame, target,
                           approvals=tuple(r["who"] for r in _approvals(store, name, candidate_version)),
                           holdout_name=label, holdout_fingerprint=fingerprint)
    verdicts = [gate.verdict(ctx) for gate in policy.gates()]
    outcome = PromotionOutcome(name, all(v.passed for v in verdicts), candidate_version.version,
                               champion_version.version if champion_version else None, verdicts)
    record = _record(who, "promote" if outcome.promoted else "refuse", alias=to_alias,
                     **{"from": outcome.previous}, to=outcome.candidate, candidate_sha256=candidate_version.sha256,
                     gates=[v.to_dict() for v in verdicts], approvals=list(ctx.approvals),
                     holdout={"name": label, "fingerprint": fingerprint,
                              "rows": None if frame is None else len(frame)},
                     policy=policy.to_record())
    if not outcome.promoted:
        store.append_audit(name, record)
        return outcome
    if frame is not None and target is not None:  # the promotion card, before anything moves
        run = store.client.get_run(candidate_version.run_id) if candidate_version.run_id else None
        try:
            evaluation = cards.evaluate(frame[target].to_numpy(), ctx.predictions(candidate_local), frame,
                                        _task(candidate_version.tags, candidate_local), _source(label, frame,
                                                                                                fingerprint),
                                        policy.report_by)
        except Exception:  # noqa: BLE001 - the gates passed; a card without figures is still a card
            evaluation = None
        _write_card(store, name, candidate_version, run, evaluation,
                    f"Promoted to '{to_alias}' {_now()[:10]} by {who.name}", "promoted")
    current = store.alias_or_none(name, to_alias)
    if (current.version if current else None) != outcome.previous:
        raise InvalidInput(f"'{to_alias}' of '{name}' moved to version {current.version if current else 'none'} "
                           f"while the gates ran; nothing changed, run promote again")
    store.set_alias(name, to_alias, candidate_version.version)
    try:
        store.append_audit(name, record)
    except BaseException:
        if champion_version:  # keep alias and trail consistent
            store.set_alias(name, to_alias, champion_version.version)
        else:
            store.delete_alias(name, to_alias)
        raise
    return outcome


def champion_history(records: list[dict[str, Any]], alias: str = CHAMPION) -> list[str]:
    """The versions ``alias`` served, oldest first, as promotions pushed and rollbacks popped them."""
    stack: list[str] = []
    for r in records:
        if r.get("alias") != alias:
            continue
        if r.get("action") == "promote":
            if not stack and r.get("from"):
                stack.append(r["from"])
            stack.append(r["to"])
        elif r.get("action") == "rollback" and stack:
            stack.pop()
            if not stack or stack[-1] != r.get("to"):
                stack.append(r["to"])
    return stack


def rollback(name: str, *, alias: str = CHAMPION, settings: Settings | None = None,
             reason: str | None = None) -> tuple[str, str]:
    """Return ``alias`` to the version it served before its latest promotion; (from, to).

    Successive rollbacks walk further back through the promotions. The version
    rolled back to is downloaded and checksum-verified before the alias moves.
    """
    settings = settings or Settings.from_env()
    who = require(settings, "rollback")
    store = ModelStore(settings)
    current = store.by_alias(name, alias)
    history = champion_history(store.audit_records(name), alias)
    if len(history) < 2:
        raise NotFound(f"'{alias}' of model '{name}' has no earlier version to roll back to")
    if history[-1] != current.version:
        raise InvalidInput(f"'{alias}' of model '{name}' is version {current.version}, but the audit trail says "
                           f"{history[-1]}: it was moved outside CivicML; fix it before rolling back")
    previous = store.get_version(name, history[-2])
    store.fetch(name, previous)  # refuse to roll back to artifacts that fail verification
    store.set_alias(name, alias, previous.version)
    record = _record(who, "rollback", alias=alias, **{"from": current.version}, to=previous.version)
    if reason:
        record["reason"] = reason[:500]
    try:
        store.append_audit(name, record)
    except BaseException:
        store.set_alias(name, alias, current.version)
        raise
    return current.version, previous.version


# -- helpers ------------------------------------------------------------------------------------
def _holdout_frame(holdout) -> tuple[pd.DataFrame | None, str | None]:
    if holdout is None:
        return None, None
    if hasattr(holdout, "frame"):  # a projects.Dataset: fingerprint the frame as evaluated, like any frame
        holdout = holdout.frame
    return holdout, frame_fingerprint(holdout)


def _holdout_label(frame, fingerprint) -> str:
    if frame is None:
        return "none"
    return f"frame-{(fingerprint or _holdout_frame(frame)[1])[:12]}"


def _source(label: str, frame: pd.DataFrame, fingerprint: str | None) -> str:
    return f"held-out set {label} ({len(frame)} rows, fingerprint {str(fingerprint)[:12]})"


def _task(tags: dict[str, str], local: LocalModel | None) -> str:
    task = (local.metadata.get("task") if local is not None else None) or tags.get("civicml.task")
    if task:
        return task
    return "regression" if tags.get("civicml.use_case") == "traffic_flow" else "classification"


def _evaluate_local(local: LocalModel, frame, target: str, report_by, label: str) -> cards.Evaluation:
    frame, fingerprint = _holdout_frame(frame)
    ctx = PromotionContext("", local, None, frame, target)
    return cards.evaluate(frame[target].to_numpy(), ctx.predictions(local), frame, _task(local.version.tags, local),
                          _source(label, frame, fingerprint), report_by)


def _intended_use(tags: dict[str, str]) -> str:
    use_case = tags.get("civicml.use_case")
    if use_case:
        try:  # lazily: serving imports registry and must not pull in training code
            from projects import get_use_case

            description = get_use_case(use_case).description
            if description:
                return f"{description.rstrip('.')} (use case `{use_case}`)."
        except Exception:  # noqa: BLE001 - a card without the use case's words is still a card
            pass
    return "Not recorded: the source run names no CivicML use case."


def _write_card(store: ModelStore, name: str, version: ModelVersion, run, evaluation, stage: str,
                suffix: str) -> None:
    if not version.run_id:
        store.set_description(name, version.version, cards.summary(evaluation, stage))
        return
    data = None
    try:
        data = json.loads(store.read_run_text(f"runs:/{version.run_id}/data/dataset.json"))
    except NotFound:
        pass
    tags = {**(run.data.tags if run is not None else {}), **version.tags}
    facts = {"version": version.version, "registered by": tags.get("civicml.registered_by"),
             "registered at": tags.get("civicml.registered_at"), "family": tags.get("civicml.family"),
             "source run": version.run_id, "study": tags.get("civicml.study"),
             "code version (git)": tags.get("civicml.code_version"), "artifact sha256": version.tags.get(TAG_SHA)}
    text = cards.render(name=name, version=version.version, intended_use=_intended_use(tags), facts=facts,
                        data=data, evaluation=evaluation, stage=stage)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    uri = store.log_run_text(version.run_id, text, f"model_cards/{safe}/v{version.version}-{suffix}.md")
    store.set_version_tag(name, version.version, TAG_CARD, uri)
    store.set_version_tag(name, version.version, TAG_CARD_SHA, hashlib.sha256(text.encode()).hexdigest())
    store.set_description(name, version.version, cards.summary(evaluation, stage))
