"""Who may act, what they may load, and what is left of interrupted registrations: each refusal is audited.

Every registry function starts with :func:`authorize` (the caller's role, from the
access file), loads models only through :func:`verified` (the manifest recorded at
registration), and every command that changes a model first calls :func:`sweep`,
which removes versions whose registration was killed half-way. Refusals of each
kind become audit records of the model concerned (``denied``, ``integrity``), with
who, when and why, before the error reaches the caller.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from civicml.access import Identity, caller, require
from civicml.errors import CivicMLError, IntegrityError, PermissionDenied
from civicml.settings import Settings
from civicml.tags import TAG_REGISTERED_AT, TAG_REGISTERED_BY, TAG_REGISTRATION
from registry.events import is_event
from registry.store import LocalModel, ModelStore, ModelVersion

log = logging.getLogger("civicml.registry")


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def audit_record(who: Identity | dict, action: str, **fields) -> dict[str, Any]:
    """An audit record: what (one of :class:`registry.events.AuditEvent`), who (name, roles, how identified),
    when, and the action's own fields."""
    action = getattr(action, "value", action)
    if not is_event(action):
        raise ValueError(f"'{action}' is not an audited event (registry.events.AuditEvent)")
    identity = who.to_record() if isinstance(who, Identity) else who
    return {"action": action, **identity, "when": now(), **fields}


def _identity_or_unknown(settings: Settings) -> dict[str, Any]:
    try:
        return caller(settings).to_record()
    except CivicMLError as err:
        return {"who": "unidentified", "roles": [], "auth": "refused", "identity_error": str(err)[:300]}


def audit_quietly(store: ModelStore, name: str, entry: dict[str, Any]) -> None:
    """Append ``entry`` to ``name``'s trail if the model exists; a trail that cannot be written does not hide
    the refusal being reported."""
    try:
        if store.exists(name):
            store.append_audit(name, entry)
    except Exception:  # noqa: BLE001 - the refusal itself still reaches the caller
        log.warning("could not write the audit record of a refusal on '%s'", name)


def authorize(settings: Settings, action: str, name: str | None = None, store: ModelStore | None = None,
              **context) -> Identity:
    """The caller's identity if it may perform ``action`` on model ``name``; a refusal is audited on ``name``."""
    try:
        return require(settings, action)
    except PermissionDenied as err:
        if name:
            store = store or ModelStore(settings)
            audit_quietly(store, name, audit_record(_identity_or_unknown(settings), "denied", attempted=action,
                                                    why=str(err), **context))
        raise


def verified(store: ModelStore, who: Identity, name: str, version: ModelVersion, purpose: str) -> LocalModel:
    """A verified private copy of ``version``; an integrity refusal is audited before it is raised."""
    try:
        local = store.fetch(name, version)
    except IntegrityError as err:
        audit_quietly(store, name, audit_record(who, "integrity", version=version.version, purpose=purpose,
                                                why=str(err), sha256=version.sha256))
        raise
    if local.added:
        log.warning("model '%s' version %s: files added since registration, not loaded: %s", name,
                    version.version, ", ".join(local.added))
    return local


def sweep(store: ModelStore, who: Identity, name: str) -> list[str]:
    """Remove versions of ``name`` whose registration died after the version existed; say so, and audit it."""
    notices = []
    for version in store.half_registered(name):
        store.discard(name, version.version)
        notice = (f"removed half-registered version {version.version} of '{name}' (registration by "
                  f"{version.tags.get(TAG_REGISTERED_BY, '?')} at {version.tags.get(TAG_REGISTERED_AT, '?')}"
                  f" did not complete)")
        audit_quietly(store, name, audit_record(who, "discard", version=version.version, source=version.source,
                                                why="registration did not complete",
                                                marker=version.tags.get(TAG_REGISTRATION)))
        log.warning(notice)
        notices.append(notice)
    return notices
