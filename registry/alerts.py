"""Monitoring alerts as audited events: each crossed threshold written once to the model's audit trail.

``monitoring.monitor`` finds the alerts (plain data); :func:`record_alerts` keeps the ones the trail does not
hold yet (an alert is the same alert when its model, kind, window (start and length), group, column, version,
variant, arm and whether it is an estimate are: :func:`alert_key`), hands those to ``send`` (a webhook, say) and writes one
``alert`` record each, with what ``send`` answered. Running ``civicml monitor`` twice over the same window
therefore audits, and sends, each alert once. Two monitors of one model at the same instant may both write
one: the trail is append-only and has no lock; the records then carry the same ``alert_key``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from civicml.settings import Settings
from registry.events import AuditEvent
from registry.guard import audit_record, authorize
from registry.store import ModelStore

IDENTITY = ("kind", "window", "window_seconds", "group", "column", "version", "variant", "arm", "estimate")


def alert_key(name: str, alert: Mapping[str, Any]) -> str:
    """What makes two alerts the same one, as 16 hex digits."""
    same = json.dumps([name, *(alert.get(k) for k in IDENTITY)], default=str, separators=(",", ":"))
    return hashlib.sha256(same.encode()).hexdigest()[:16]


@dataclass
class AuditedAlerts:
    """What :func:`record_alerts` did: the alerts audited now (as written), how many the trail held already,
    and what ``send`` answered (None when nothing was new or nothing was to be sent)."""

    audited: list[dict[str, Any]] = field(default_factory=list)
    already: int = 0
    delivery: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"audited": len(self.audited), "already_audited": self.already, "delivery": self.delivery}


def record_alerts(name: str, alerts: list[Mapping[str, Any]], settings: Settings | None = None, *,
                  send: Callable[[list[dict]], dict] | None = None,
                  context: Mapping[str, Any] | None = None) -> AuditedAlerts:
    """Audit each of ``alerts`` (``monitoring.Alert.to_dict()``) on model ``name`` unless its trail holds it;
    ``send(new_alerts)`` is called once with the new ones first and its answer (a mapping; an exception is
    recorded as ``error``, never raised) is kept in every record. ``context``: fields every record carries
    (the policy's thresholds, the monitoring run)."""
    settings = settings or Settings.from_env()
    store = ModelStore(settings)
    who = authorize(settings, "read", name, store)  # watching is reading; a refusal is audited on the model
    held = {r.get("alert_key") for r in store.audit_records(name) if r.get("action") == AuditEvent.ALERT.value}
    fresh: dict[str, dict[str, Any]] = {}
    for alert in alerts:
        key = alert_key(name, alert)
        if key not in held and key not in fresh:
            fresh[key] = {**alert, "alert_key": key}
    out = AuditedAlerts(already=sum(alert_key(name, a) in held for a in alerts))
    if fresh and send is not None:
        try:
            out.delivery = dict(send(list(fresh.values())))
        except Exception as err:  # noqa: BLE001 - a failed delivery is recorded, never a lost alert
            out.delivery = {"error": f"{type(err).__name__}: {err}"[:300]}
    for entry in fresh.values():
        extra = {"delivery": out.delivery} if out.delivery is not None else {}
        record = audit_record(who, AuditEvent.ALERT, **dict(context or {}), **entry, **extra)
        store.append_audit(name, record)
        out.audited.append(record)
    return out


def alerts_of(trail: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The ``alert`` records of an audit trail (``registry.audit(name)``), newest first."""
    return [r for r in reversed(trail) if r.get("action") == AuditEvent.ALERT.value]


__all__ = ["AuditedAlerts", "alert_key", "alerts_of", "record_alerts"]
