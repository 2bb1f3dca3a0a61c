"""What release managers do: approve, promote under a policy, roll back, move aliases (registering:
registration.py; reading: queries.py).

Every function checks the caller's role first (:mod:`registry.guard`), and every
change writes an append-only audit record (registered-model tags
``civicml.audit.<time>.<ns>.<random>``, one JSON record each) saying who, when,
from, to, and why. So does every refusal: of a role, of artifacts that fail their
integrity check, of a promotion's gates; and every forced promotion.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from civicml.access import Identity
from civicml.errors import IntegrityError, InvalidInput, NotFound
from civicml.settings import Settings
from registry import card as cards, variants
from registry.gates import GateVerdict, PromotionContext
from registry.guard import audit_record as _record, authorize, now as _now, sweep, verified
from registry.inputs import governing
from registry.policy import PromotionPolicy
from registry.queries import CHALLENGER, CHAMPION, RESERVED_ALIASES, approval_records
from registry.registration import held_out_source, holdout_frame, holdout_label, reserved_alias_guard, write_card
from registry.store import ModelStore, ModelVersion, validate_alias
from registry.use_cases import task_of
from registry.variant_lookup import summary_of, variants_of


@dataclass
class PromotionOutcome:
    name: str
    promoted: bool
    candidate: str
    previous: str | None
    verdicts: list[GateVerdict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the gate report must say besides the verdicts
    forced: bool = False
    # the candidate's variants (registry.variant_lookup.summary_of), each with "built": made by this promotion
    variants: list[dict[str, Any]] = field(default_factory=list)

    @property
    def reason(self) -> str:
        failed = [v for v in self.verdicts if not v.passed]
        return "; ".join(f"{v.gate}: {v.detail}" for v in failed) or "all gates passed"


# -- aliases and approvals ----------------------------------------------------------------------
def set_alias(name: str, alias: str, version: str, settings: Settings | None = None) -> None:
    """Point ``alias`` (``challenger`` or any named alias, never ``champion`` in any case) at ``version``."""
    settings = settings or Settings.from_env()
    store = ModelStore(settings)
    who = authorize(settings, "set_alias", name, store, alias=alias, version=str(version))
    validate_alias(alias)
    reserved_alias_guard(alias)
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
    already = approval_records(store, name, mv)
    if any(r["who"] == who.name for r in already):
        raise InvalidInput(f"{who.name} already approved '{name}' version {mv.version}")
    entry = _record(who, "approve", version=mv.version, sha256=mv.sha256)
    if note:
        entry["note"] = note[:500]
    store.append_audit(name, entry)
    return [r["who"] for r in already] + [who.name]


# -- promote: the steps read as the policy reads --------------------------------------------------
@dataclass(frozen=True)
class PromoteOptions:
    """Which alias moves to which (``from_alias`` -> ``to_alias``), and ``force`` past a broken input contract
    with its ``reason`` (audited)."""

    from_alias: str = CHALLENGER
    to_alias: str = CHAMPION
    force: bool = False
    reason: str | None = None


def promote(name: str, holdout: pd.DataFrame | None, target: str | None, options: PromoteOptions | None = None, *,
            policy: PromotionPolicy | None = None, settings: Settings | None = None, holdout_name: str | None = None,
            **choices) -> PromotionOutcome:
    """Move ``to_alias`` to the version at ``from_alias`` if every gate of the model's policy passes
    (``options``, a :class:`PromoteOptions`, or its fields by keyword).

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
    o = replace(options or PromoteOptions(), **choices)  # an unknown keyword is a TypeError, as for any call
    from_alias, to_alias, force, reason = o.from_alias, o.to_alias, o.force, o.reason
    settings = settings or Settings.from_env()
    store = ModelStore(settings)
    who = authorize(settings, "promote", name, store, alias=to_alias)
    if force:
        authorize(settings, "force_promote", name, store, alias=to_alias)
    _check_target_alias(to_alias)
    sweep(store, who, name)
    policy, notes = _policy_for(settings, store, who, name, policy)
    candidate, champion = _positions(store, name, from_alias, to_alias)
    frame, fingerprint = holdout_frame(holdout)
    if frame is not None and target not in frame.columns:
        raise InvalidInput(f"held-out data has no target column '{target}'")
    label = holdout_name or (policy.holdout.label if policy.holdout else None) or holdout_label(frame, fingerprint)
    candidate_local = verified(store, who, name, candidate, "promote")
    champion_local, note = _champion_for_comparison(store, who, name, champion, to_alias)
    notes += [note] if note else []
    ctx = PromotionContext(name, candidate_local, champion_local, frame, target,
                           approvals=tuple(r["who"] for r in approval_records(store, name, candidate)),
                           holdout_name=label, holdout_fingerprint=fingerprint, serving=champion)
    ctx.changes.update(_policy_recorded(store, name, policy))
    verdicts, forced = _judge(policy, ctx, who, force, reason, to_alias)
    outcome = PromotionOutcome(name, all(v.passed for v in verdicts), candidate.version,
                               champion.version if champion else None, verdicts, notes, forced)
    if outcome.promoted:  # the champion moves with its variants; build those the policy asks for first
        outcome.variants = _variants_with(settings, store, candidate, policy, ctx, notes)
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
    _promotion_card(store, ctx, candidate, policy, who, to_alias)
    _move_alias(store, name, to_alias, candidate, champion, entry)
    return outcome


def _variants_with(settings, store, candidate: ModelVersion, policy: PromotionPolicy, ctx: PromotionContext,
                   notes: list[str]) -> list[dict]:
    """The candidate's variants after building what the policy's ``variants.build`` asks for, on the promotion's
    held-out set (notes say what could not be built); a refused or missing variant never blocks the promotion,
    and is never served."""
    name = ctx.name
    built, more = variants.build_for_promotion(name, candidate.version, policy.variant_policy(), ctx.holdout,
                                               ctx.target, ctx.holdout_fingerprint, settings)
    notes += more
    return [{**summary_of(store, v), "built": v.version in built} for v in variants_of(name, candidate.version, settings)]


def _policy_recorded(store: ModelStore, name: str, policy: PromotionPolicy) -> dict[str, str]:
    """When the governing policy was recorded with ``name`` (a material change that people's review of a high-risk
    model must follow: :class:`registry.gates.HumanAccountability`); {} when it does not matter or is unknown."""
    if policy.accountability is None or not policy.accountability.high_risk or not policy.sha256:
        return {}
    when = [r["when"] for r in store.audit_records(name) if r.get("action") == "register"
            and (r.get("policy_recorded") or {}).get("sha256") == policy.sha256]
    return {f"recording of policy revision {policy.version or '?'}": when[-1]} if when else {}


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
    candidate = store.version_at(name, from_alias)
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


def _promotion_card(store, ctx: PromotionContext, candidate: ModelVersion, policy: PromotionPolicy, who: Identity,
                    alias: str) -> None:
    """The candidate's card, written again with its figures on the promotion's held-out set."""
    if ctx.holdout is None or ctx.target is None:
        return
    name, frame, candidate_local = ctx.name, ctx.holdout, ctx.candidate
    label, fingerprint = ctx.holdout_name, ctx.holdout_fingerprint
    try:
        evaluation = cards.evaluate(frame[ctx.target].to_numpy(), ctx.predictions(candidate_local), frame,
                                    task_of(candidate.tags, candidate_local.metadata),
                                    held_out_source(label, frame, fingerprint), policy.report_by)
        evaluation.also.update(ctx.also)  # figures the gates measured on other held-out sets
    except Exception:  # noqa: BLE001 - the gates passed; a card without figures is still a card
        evaluation = None
    write_card(store, name, candidate, store.run_or_none(candidate.run_id), evaluation,
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


