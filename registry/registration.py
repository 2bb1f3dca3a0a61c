"""Registering a version: the version, its manifest and digest, lineage, rules and charts, its model card,
the governing policy, an alias and the audit record, all or nothing (and the model cards written later).

Every change checks the caller's role first (:mod:`registry.guard`) and writes an append-only audit
record; :mod:`registry.lifecycle` (approve, promote, roll back) builds on what is here.
"""

from __future__ import annotations

import hashlib
import json

import pandas as pd

from civicml.errors import IntegrityError, InvalidInput, NotFound
from civicml.fingerprint import frame_fingerprint
from civicml.settings import Settings
from civicml.tags import (TAG_CODE_VERSION, TAG_FAMILY, TAG_MODEL_CARD, TAG_MODEL_CARD_SHA256,
                          TAG_REGISTERED_AT, TAG_REGISTERED_AUTH, TAG_REGISTERED_BY, TAG_SHA256, TAG_SOURCE,
                          TAG_STUDY, TAG_STUDY_RUN_ID, TAG_USE_CASE)
from registry import card as cards, rules
from registry.gates import PromotionContext
from registry.guard import audit_record as _record, authorize, now as _now, sweep, verified
from registry.inputs import record_project_policy
from registry.queries import CHALLENGER, LINEAGE_TAGS, RESERVED_ALIASES
from registry.store import LocalModel, ModelStore, ModelVersion, validate_alias, validate_name
from registry.use_cases import task_of, use_case_named
from registry.variant_lookup import variant_facts


def reserved_alias_guard(alias: str) -> None:
    """``champion`` (in any case: ``Champion``, ``CHAMPION``) moves only through promote and rollback."""
    if alias.casefold() in RESERVED_ALIASES:
        raise InvalidInput(f"'{alias}' is reserved: '{alias.casefold()}' moves only through `promote` (gates) "
                           f"and `rollback`")


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
        reserved_alias_guard(alias)
    sweep(store, who, name)
    version_tags = {TAG_REGISTERED_BY: who.name, TAG_REGISTERED_AT: _now(),
                    TAG_REGISTERED_AUTH: who.auth, TAG_SOURCE: model_uri}
    run_id = store.run_id_of(model_uri)
    run = store.get_run(run_id, model_uri) if run_id else None
    if run is not None:
        version_tags.update({k: run.data.tags[k] for k in LINEAGE_TAGS if k in run.data.tags})
        parent = run.data.tags.get("mlflow.parentRunId")
        if parent:
            version_tags[TAG_STUDY_RUN_ID] = parent
    version_tags.update(tags or {})

    def complete(version: ModelVersion) -> None:
        evaluation = None
        if holdout is not None and target is not None:
            local = verified(store, who, name, version, "register")
            evaluation = evaluate_local(local, holdout, target, report_by, holdout_label(holdout, None))
        elif run is not None:
            evaluation = cards.from_run_metrics(run.data.metrics, task_of(run.data.tags),
                                                f"validation split of run {run.info.run_id}")
        rules.log_insights(store, name, version, holdout, target)  # rules + charts + map (on the card); never fails
        write_card(store, name, store.get_version(name, version.version), run, evaluation,
                   f"Registered {_now()[:10]} by {who.name}", "registered")
        policy = record_project_policy(store, name, use_case_named(version.tags.get(TAG_USE_CASE)))
        if alias:
            store.set_alias(name, alias, version.version)
        store.append_audit(name, _record(who, "register", version=version.version, alias=alias,
                                         source=model_uri, sha256=version.sha256, run_id=version.run_id,
                                         **({"policy_recorded": policy} if policy else {})))

    return store.register(model_uri, name, tags=version_tags, complete=complete)


def holdout_frame(holdout) -> tuple[pd.DataFrame | None, str | None]:
    if holdout is None:
        return None, None
    if hasattr(holdout, "frame"):  # a projects.Dataset: fingerprint the frame as evaluated, like any frame
        holdout = holdout.frame
    return holdout, frame_fingerprint(holdout)


def holdout_label(frame, fingerprint) -> str:
    if frame is None:
        return "none"
    return f"frame-{(fingerprint or holdout_frame(frame)[1])[:12]}"


def held_out_source(label: str, frame: pd.DataFrame, fingerprint: str | None) -> str:
    return f"held-out set {label} ({len(frame)} rows, fingerprint {str(fingerprint)[:12]})"


def evaluate_local(local: LocalModel, frame, target: str, report_by, label: str) -> cards.Evaluation:
    frame, fingerprint = holdout_frame(frame)
    ctx = PromotionContext("", local, None, frame, target)
    return cards.evaluate(frame[target].to_numpy(), ctx.predictions(local), frame, task_of(local.version.tags, local.metadata),
                          held_out_source(label, frame, fingerprint), report_by)


def _intended_use(tags: dict[str, str]) -> str:
    use_case = tags.get(TAG_USE_CASE)
    if use_case:
        try:
            description = use_case_named(use_case).description
            if description:
                return f"{description.rstrip('.')} (use case `{use_case}`)."
        except Exception:  # noqa: BLE001 - a card without the use case's words is still a card
            pass
    return "Not recorded: the source run names no CivicML use case."


def write_card(store: ModelStore, name: str, version: ModelVersion, run, evaluation, stage: str,
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
    facts = {"version": version.version, "registered by": tags.get(TAG_REGISTERED_BY),
             "registered at": tags.get(TAG_REGISTERED_AT), "family": tags.get(TAG_FAMILY),
             "source run": version.run_id, "study": tags.get(TAG_STUDY),
             "code version (git)": tags.get(TAG_CODE_VERSION), "artifact sha256": version.tags.get(TAG_SHA256)}
    text = cards.render(name=name, version=version.version, intended_use=_intended_use(tags), facts=facts,
                        data=data, evaluation=evaluation, stage=stage, rules=cards.rules_of(version.tags))
    text = cards.with_variants(text, _variants_section(store, name, version))
    _store_card(store, name, version, text, suffix)
    store.set_description(name, version.version, cards.summary(evaluation, stage))


def _store_card(store: ModelStore, name: str, version: ModelVersion, text: str, suffix: str) -> None:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    uri = store.log_run_text(version.run_id, text, f"model_cards/{safe}/v{version.version}-{suffix}.md")
    store.set_version_tag(name, version.version, TAG_MODEL_CARD, uri)
    store.set_version_tag(name, version.version, TAG_MODEL_CARD_SHA256, hashlib.sha256(text.encode()).hexdigest())


def _variants_section(store: ModelStore, name: str, version: ModelVersion) -> str:
    try:
        return cards.variants_section(variant_facts(store, name, version))
    except Exception:  # noqa: BLE001 - a card without its variants block is still a card
        return ""


def rewrite_card_variants(store: ModelStore, name: str, version: ModelVersion) -> None:
    """Write ``version``'s card again with its variants as they are now (the rest of the card unchanged)."""
    uri = version.tags.get(TAG_MODEL_CARD)
    if not uri or not version.run_id:
        return
    text = store.read_run_text(uri)
    if hashlib.sha256(text.encode()).hexdigest() != version.tags.get(TAG_MODEL_CARD_SHA256):
        raise IntegrityError(f"model card of '{name}' version {version.version} does not match its recorded "
                             f"checksum; not rewritten")
    suffix = uri.rsplit("/", 1)[-1].removeprefix(f"v{version.version}-").removesuffix(".md") or "registered"
    _store_card(store, name, version, cards.with_variants(text, _variants_section(store, name, version)), suffix)


__all__ = ["evaluate_local", "held_out_source", "holdout_frame", "holdout_label", "register", "reserved_alias_guard",
           "rewrite_card_variants", "write_card"]
