"""What release managers do: register, approve, promote under a policy, roll back (reading: queries.py).

Every function checks the caller's role first (:mod:`registry.guard`), and every
change writes an append-only audit record (registered-model tags
``civicml.audit.<time>.<ns>.<random>``, one JSON record each) saying who, when,
from, to, and why. So does every refusal: of a role, of artifacts that fail their
integrity check, of a promotion's gates; and every forced promotion.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from civicml.access import Identity
from civicml.errors import IntegrityError, InvalidInput, NotFound
from civicml.fingerprint import frame_fingerprint
from civicml.settings import Settings
from registry import card as cards, rules
from registry.gates import GateVerdict, PromotionContext
from registry.guard import authorize, now as _now, record as _record, sweep, verified
from registry.inputs import governing, record_project_policy, task_of, use_case_named
from registry.policy import PromotionPolicy
from registry.queries import CHALLENGER, CHAMPION, LINEAGE_TAGS, RESERVED_ALIASES, TAG_CARD, TAG_CARD_SHA, _approvals
from registry.store import (TAG_SHA, LocalModel, ModelStore, ModelVersion, is_version_number, validate_alias,
                            validate_name)


@dataclass
class PromotionOutcome:
    name: str
    promoted: bool
    candidate: str
    previous: str | None
    verdicts: list[GateVerdict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the gate report must say besides the verdicts
    forced: bool = False
    # the candidate's variants (registry.variants.summary_of), each with "built": made by this promotion
    variants: list[dict[str, Any]] = field(default_factory=list)

    @property
    def reason(self) -> str:
        failed = [v for v in self.verdicts if not v.passed]
        return "; ".join(f"{v.gate}: {v.detail}" for v in failed) or "all gates passed"


def _reserved_alias_guard(alias: str) -> None:
    """``champion`` (in any case: ``Champion``, ``CHAMPION``) moves only through promote and rollback."""
    if alias.casefold() in RESERVED_ALIASES:
        raise InvalidInput(f"'{alias}' is reserved: '{alias.casefold()}' moves only through `promote` (gates) "
                           f"and `rollback`")


# -- register -----------------------------------------------------------------------------------
def register(model_uri: str, name: str, *, alias: str | None = CHALLENGER, settings: Settings | None = None,
             tags: dict[str, str] | None = None, holdout: pd.DataFrame | None = None, target: str | None = None,
             report_by: tuple[str, ...] = ()) -> ModelVersion:
    """Register ``model_uri`` as a new version of ``name``, with lineage tags and a model card; set ``alias``.

    Either every step completes (version, manifest and digest, lineage, card, the
    governing policy, alias, audit record) or the version is removed again; a
    registration killed half-way is removed by the next registry command. With
    ``holdout``/``target`` the card's figures come from that data set, else from the
    source run's logged metrics.
    """
    settings = settings or Settings.from_env()
    store = ModelStore(settings)
    who = authorize(settings, "register", name, store, source=model_uri)
    validate_name(name, "model name")
    if alias:
        validate_alias(alias)
        _reserved_alias_guard(alias)
    sweep(store, who, name)
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
            local = verified(store, who, name, version, "register")
            evaluation = _evaluate_local(local, holdout, target, report_by, _holdout_label(holdout, None))
        elif run is not None:
            evaluation = cards.from_run_metrics(run.data.metrics, task_of(run.data.tags),
                                                f"validation split of run {run.info.run_id}")
        rules.log_insights(store, name, version, holdout, target)  # rules + charts + map (on the card); never fails
        _write_card(store, name, store.get_version(name, version.version), run, evaluation,
                    f"Registered {_now()[:10]} by {who.name}", "registered")
        policy = record_project_policy(store, name, use_case_named(version.tags.get("civicml.use_case")))
        if alias:
            store.set_alias(name, alias, version.version)
        store.append_audit(name, _record(who, "register", version=version.version, alias=alias,
                                         source=model_uri, sha256=version.sha256, run_id=version.run_id,
                                         **({"policy_recorded": policy} if policy else {})))

    return store.register(model_uri, name, tags=version_tags, complete=complete)


# -- aliases and approvals ----------------------------------------------------------------------
def set_alias(name: str, alias: str, version: str, settings: Settings | None = None) -> None:
    """Point ``alias`` (``challenger`` or any named alias, never ``champion`` in any case) at ``version``."""
    settings = settings or Settings.from_env()
    store = ModelStore(settings)
    who = authorize(settings, "set_alias", name, store, alias=alias, version=str(version))
    validate_alias(alias)
    _reserved_alias_guard(alias)
    sweep(store, who, name)
    target = _complete_version(store, name, version)
    previous = store.alias_or_none(name, alias)
    store.set_alias(name, alias, target.version)
    store.append_audit(name, _record(who, "alias", alias=alias, **{"from": previous.version if previous else None},
                                     to=target.version))


def approve(name: str, version: str, settings: Settings | None = None, note: str | None = None) -> list[str]:
    """Record the caller's approval of ``version``; return everyone who approved it so far."""
    settings = settings or Settings.from_env()
    store = ModelStore(settings)
    who = authorize(settings, "approve", name, store, version=str(version))
    sweep(store, who, name)
    mv = _complete_version(store, name, version)
    already = _approvals(store, name, mv)
    if any(r["who"] == who.name for r in already):
        raise InvalidInput(f"{who.name} already approved '{name}' version {mv.version}")
    entry = _record(who, "approve", version=mv.version, sha256=mv.sha256)
    if note:
        entry["note"] = note[:500]
    store.append_audit(name, entry)
    return [r["who"] for r in already] + [who.name]


# -- promote: the steps read as the policy reads --------------------------------------------------
def promote(name: str, holdout: pd.DataFrame | None, target: str | None, *, policy: PromotionPolicy | None = None,
            from_alias: str = CHALLENGER, to_alias: str = CHAMPION, settings: Settings | None = None,
            holdout_name: str | None = None, force: bool = False, reason: str | None = None) -> PromotionOutcome:
    """Move ``to_alias`` to the version at ``from_alias`` if every gate of the model's policy passes.

    1. who: the caller may promote (and, for a ``policy`` other than the model's
       governing one, override it; for ``force``, force);
    2. what: the candidate at ``from_alias`` and the version ``to_alias`` serves now;
       both verified against their manifests. A champion that fails verification is
       treated as absent for the comparison gates, and the report says so;
    3. the gates: the policy's, each re-evaluated on ``holdout``, and always the
       serving alias's input contract (which only ``force`` passes, audited);
    4. the move: card first, then the alias if nobody moved it meanwhile, then the
       audit record (undone together if the record cannot be written).

    A refusal changes no alias; promotions and refusals are both audited, with
    each gate's figure and verdict, the policy and any override.
    """
    settings = settings or Settings.from_env()
    store = ModelStore(settings)
    who = authorize(settings, "promote", name, store, alias=to_alias)
    if force:
        authorize(settings, "force_promote", name, store, alias=to_alias)
    _check_target_alias(to_alias)
    sweep(store, who, name)
    policy, notes = _policy_for(settings, store, who, name, policy)
    candidate, champion = _positions(store, name, from_alias, to_alias)
    frame, fingerprint = _holdout_frame(holdout)
    if frame is not None and target not in frame.columns:
        raise InvalidInput(f"held-out data has no target column '{target}'")
    label = holdout_name or (policy.holdout.label if policy.holdout else None) or _holdout_label(frame, fingerprint)
    candidate_local = verified(store, who, name, candidate, "promote")
    champion_local, note = _champion_for_comparison(store, who, name, champion, to_alias)
    notes += [note] if note else []
    ctx = PromotionContext(name, candidate_local, champion_local, frame, target,
                           approvals=tuple(r["who"] for r in _approvals(store, name, candidate)),
                           holdout_name=label, holdout_fingerprint=fingerprint, serving=champion)
    verdicts, forced = _judge(policy, ctx, who, force, reason, to_alias)
    outcome = PromotionOutcome(name, all(v.passed for v in verdicts), candidate.version,
                               champion.version if champion else None, verdicts, notes, forced)
    if outcome.promoted:  # the champion moves with its variants; build those the policy asks for first
        outcome.variants = _variants_with(settings, store, name, candidate, policy, frame, target, fingerprint,
                                          notes)
    entry = _record(who, "promote" if outcome.promoted else "refuse", alias=to_alias,
                    **{"from": outcome.previous}, to=outcome.candidate, candidate_sha256=candidate.sha256,
                    gates=[v.to_dict() for v in verdicts], approvals=list(ctx.approvals),
                    holdout={"name": label, "fingerprint": fingerprint, "rows": None if frame is None else len(frame)},
                    policy=policy.to_record(), notes=notes,
                    **({"variants": [{k: v[k] for k in ("kind", "version", "gate", "built")}
                                     for v in outcome.variants]} if outcome.variants else {}),
                    **({"forced": True, "reason": (reason or "")[:500]} if forced else {}))
    if not outcome.promoted:
        store.append_audit(name, entry)
        return outcome
    _promotion_card(store, name, candidate, candidate_local, ctx, policy, label, fingerprint, who, to_alias)
    _move_alias(store, name, to_alias, candidate, champion, entry)
    return outcome


def _variants_with(settings, store, name, candidate, policy, frame, target, fingerprint, notes) -> list[dict]:
    """The candidate's variants after building what the policy's ``variants.build`` asks for (notes say what
    could not be built); a refused or missing variant never blocks the promotion, and is never served."""
    from registry import variants

    built, more = variants.build_for_promotion(name, candidate.version, policy.variant_policy(), frame, target,
                                               fingerprint, settings)
    notes += more
    return [{**variants.summary_of(store, v), "built": v.version in built}
            for v in variants.variants_of(name, candidate.version, settings)]


def _check_target_alias(alias: str) -> None:
    validate_alias(alias)
    if alias.casefold() in RESERVED_ALIASES and alias not in RESERVED_ALIASES:
        raise InvalidInput(f"'{alias}' is reserved in every case: did you mean '{alias.casefold()}'?")


def _policy_for(settings, store, who: Identity, name: str, policy: PromotionPolicy | None):
    """The governing policy, or ``policy`` if the caller may override it: (policy, notes for the report)."""
    rules = governing(store, name)
    if policy is None or policy == rules:
        return rules, []
    if policy.model and policy.model != name:
        raise InvalidInput(f"policy {policy.source or ''} governs model '{policy.model}', not '{name}'"
                           .replace("  ", " "))
    authorize(settings, "override_policy", name, store, governing=rules.to_record(), offered=policy.to_record())
    return policy, [f"policy override by {who.name}: {policy.source or 'a policy given in code'} "
                    f"(sha256 {str(policy.sha256)[:12]}) replaces the governing policy "
                    f"{rules.source or 'built-in'} (sha256 {str(rules.sha256)[:12]})"]


def _positions(store: ModelStore, name: str, from_alias: str, to_alias: str):
    """(candidate, the version ``to_alias`` serves now or None)."""
    candidate = _complete_version(store, name, from_alias) if is_version_number(from_alias) \
        else store.by_alias(name, from_alias)
    if candidate.pending:
        raise NotFound(f"version {candidate.version} of '{name}' is still being registered")
    champion = store.alias_or_none(name, to_alias)
    if champion and champion.version == candidate.version:
        raise InvalidInput(f"version {candidate.version} of '{name}' is already '{to_alias}'")
    return candidate, champion


def _champion_for_comparison(store, who, name, champion: ModelVersion | None, alias: str):
    """The current version of ``alias`` to compare with; None with a note when it fails verification."""
    if champion is None:
        return None, None
    try:
        return verified(store, who, name, champion, "compare"), None
    except IntegrityError as err:
        return None, (f"'{alias}' version {champion.version} failed its integrity check and is treated as absent "
                      f"for the comparison gates; its input contract (the signature recorded at its registration) "
                      f"still holds ({err})")


def _judge(policy: PromotionPolicy, ctx: PromotionContext, who: Identity, force: bool, reason: str | None,
           alias: str) -> tuple[list[GateVerdict], bool]:
    """Every gate's verdict; ``force`` passes only a broken input contract, and says who forced it."""
    verdicts, forced = [], False
    for gate in policy.gates():
        verdict = gate.verdict(ctx)
        if getattr(gate, "forceable", False) and not verdict.passed and force:
            forced = True
            verdict = GateVerdict(verdict.gate, True, verdict.figure, verdict.threshold,
                                  f"FORCED by {who.name} ({reason or 'no reason given'}): {verdict.detail}; "
                                  f"clients of '{alias}' may break")
        verdicts.append(verdict)
    return verdicts, forced


def _promotion_card(store, name, candidate, candidate_local, ctx, policy, label, fingerprint, who, alias) -> None:
    if ctx.holdout is None or ctx.target is None:
        return
    frame = ctx.holdout
    try:
        evaluation = cards.evaluate(frame[ctx.target].to_numpy(), ctx.predictions(candidate_local), frame,
                                    task_of(candidate.tags, candidate_local.metadata),
                                    _source(label, frame, fingerprint), policy.report_by)
        evaluation.also.update(ctx.also)  # figures the gates measured on other held-out sets
    except Exception:  # noqa: BLE001 - the gates passed; a card without figures is still a card
        evaluation = None
    _write_card(store, name, candidate, store.run_or_none(candidate.run_id), evaluation,
                f"Promoted to '{alias}' {_now()[:10]} by {who.name}", "promoted")


def _move_alias(store, name, alias, candidate, champion, entry) -> None:
    current = store.alias_or_none(name, alias)
    previous = champion.version if champion else None
    if (current.version if current else None) != previous:
        raise InvalidInput(f"'{alias}' of '{name}' moved to version {current.version if current else 'none'} "
                           f"while the gates ran; nothing changed, run promote again")
    store.set_alias(name, alias, candidate.version)
    try:
        store.append_audit(name, entry)
    except BaseException:
        if champion:  # keep alias and trail consistent
            store.set_alias(name, alias, champion.version)
        else:
            store.delete_alias(name, alias)
        raise


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
    rolled back to is verified before the alias moves; the version rolled back
    from need not be (a tampered champion is exactly what one rolls back from).
    """
    settings = settings or Settings.from_env()
    store = ModelStore(settings)
    who = authorize(settings, "rollback", name, store, alias=alias)
    sweep(store, who, name)
    current = store.by_alias(name, alias)
    history = champion_history(store.audit_records(name), alias)
    if len(history) < 2:
        raise NotFound(f"'{alias}' of model '{name}' has no earlier version to roll back to")
    if history[-1] != current.version:
        raise InvalidInput(f"'{alias}' of model '{name}' is version {current.version}, but the audit trail says "
                           f"{history[-1]}: it was moved outside CivicML; fix it before rolling back")
    previous = store.get_version(name, history[-2])
    verified(store, who, name, previous, "rollback")  # refuse to roll back to artifacts that fail verification
    store.set_alias(name, alias, previous.version)
    entry = _record(who, "rollback", alias=alias, **{"from": current.version}, to=previous.version)
    if reason:
        entry["reason"] = reason[:500]
    try:
        store.append_audit(name, entry)
    except BaseException:
        store.set_alias(name, alias, current.version)
        raise
    return current.version, previous.version


def _complete_version(store: ModelStore, name: str, version) -> ModelVersion:
    found = store.get_version(name, version)
    if found.pending:
        raise NotFound(f"model '{name}' has no version {version} (its registration has not completed)")
    return found


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


def _evaluate_local(local: LocalModel, frame, target: str, report_by, label: str) -> cards.Evaluation:
    frame, fingerprint = _holdout_frame(frame)
    ctx = PromotionContext("", local, None, frame, target)
    return cards.evaluate(frame[target].to_numpy(), ctx.predictions(local), frame, task_of(local.version.tags, local.metadata),
                          _source(label, frame, fingerprint), report_by)


def _intended_use(tags: dict[str, str]) -> str:
    use_case = tags.get("civicml.use_case")
    if use_case:
        try:
            description = use_case_named(use_case).description
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
                        data=data, evaluation=evaluation, stage=stage, rules=cards.rules_of(version.tags))
    text = cards.with_variants(text, _variants_section(store, name, version))
    _store_card(store, name, version, text, suffix)
    store.set_description(name, version.version, cards.summary(evaluation, stage))


def _store_card(store: ModelStore, name: str, version: ModelVersion, text: str, suffix: str) -> None:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    uri = store.log_run_text(version.run_id, text, f"model_cards/{safe}/v{version.version}-{suffix}.md")
    store.set_version_tag(name, version.version, TAG_CARD, uri)
    store.set_version_tag(name, version.version, TAG_CARD_SHA, hashlib.sha256(text.encode()).hexdigest())


def _variants_section(store: ModelStore, name: str, version: ModelVersion) -> str:
    from registry.variants import variant_facts

    try:
        return cards.variants_section(variant_facts(store, name, version))
    except Exception:  # noqa: BLE001 - a card without its variants block is still a card
        return ""


def rewrite_card_variants(store: ModelStore, name: str, version: ModelVersion) -> None:
    """Write ``version``'s card again with its variants as they are now (the rest of the card unchanged)."""
    uri = version.tags.get(TAG_CARD)
    if not uri or not version.run_id:
        return
    text = store.read_run_text(uri)
    if hashlib.sha256(text.encode()).hexdigest() != version.tags.get(TAG_CARD_SHA):
        raise IntegrityError(f"model card of '{name}' version {version.version} does not match its recorded "
                             f"checksum; not rewritten")
    suffix = uri.rsplit("/", 1)[-1].removeprefix(f"v{version.version}-").removesuffix(".md") or "registered"
    _store_card(store, name, version, cards.with_variants(text, _variants_section(store, name, version)), suffix)
