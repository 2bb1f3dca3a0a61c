"""Canary and shadow roll-outs, stored in the registry so that every serving replica reads the same split.

A roll-out is one registered-model tag (``civicml.rollout``, JSON): which version, what share of
traffic (percent), canary (its answers are returned) or shadow (mirrored, answers dropped,
agreement recorded), and the limits over which replicas stop it by themselves (error rate, p95
latency over a window of requests). Starting and stopping are audited like promotions.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from civicml.errors import InvalidInput
from civicml.settings import Settings
from civicml.tags import TAG_ROLLOUT
from registry.guard import audit_record as record, authorize
from registry.store import ModelStore

MODES = ("canary", "shadow")


@dataclass(frozen=True)
class Rollout:
    version: str
    weight: float  # percent of requests
    mode: str = "canary"
    max_error_rate: float = 0.05  # stop when more than this share of the canary's requests fail ...
    max_p95_ms: float | None = None  # ... or its p95 latency passes this
    window: int = 50  # over the last this many requests (and not before that many)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> "Rollout":
        return Rollout(**{k: v for k, v in json.loads(text).items() if k in Rollout.__dataclass_fields__})


def start(name: str, version: str | int, weight: float, mode: str = "canary", *, max_error_rate: float = 0.05,
          max_p95_ms: float | None = None, window: int = 50, settings: Settings | None = None) -> Rollout:
    """Send ``weight`` percent of ``name``'s traffic to ``version`` (release managers)."""
    settings = settings or Settings.from_env()
    store = ModelStore(settings)
    who = authorize(settings, "promote", name, store, attempted_rollout=mode, version=str(version))
    if mode not in MODES:
        raise InvalidInput(f"unknown roll-out mode '{mode}' (known: {', '.join(MODES)})")
    if not 0 < weight <= 100:
        raise InvalidInput(f"--weight must be a percentage in (0, 100], got {weight}")
    if not 0 <= max_error_rate <= 1 or window < 1 or (max_p95_ms is not None and max_p95_ms <= 0):
        raise InvalidInput("limits: 0 <= max error rate <= 1, window >= 1, max p95 > 0")
    mv = store.get_version(name, version)
    rollout = Rollout(mv.version, float(weight), mode, float(max_error_rate), max_p95_ms, int(window))
    store.client.set_registered_model_tag(name, TAG_ROLLOUT, rollout.to_json())
    store.append_audit(name, record(who, mode, **asdict(rollout)))
    return rollout


def current(name: str, settings: Settings | None = None) -> Rollout | None:
    """The roll-out in force for ``name``, or None (one cheap registry read: replicas poll it)."""
    tags = ModelStore(settings or Settings.from_env()).get_model(name).tags or {}
    text = tags.get(TAG_ROLLOUT)
    if not text:
        return None
    try:
        return Rollout.from_json(text)
    except (ValueError, TypeError):
        return None


def stop(name: str, reason: str = "stopped", *, automatic: bool = False,
         settings: Settings | None = None) -> Rollout | None:
    """End the roll-out: by command (``rollback``: release managers) or ``automatic``ally by a serving replica
    whose limits were passed (``stop_rollout``: its service token, or a release manager). A refusal is audited."""
    settings = settings or Settings.from_env()
    store = ModelStore(settings)
    who = authorize(settings, "stop_rollout" if automatic else "rollback", name, store, automatic=automatic,
                    reason=reason[:500])
    rollout = current(name, settings)
    if rollout is None:
        return None
    store.client.delete_registered_model_tag(name, TAG_ROLLOUT)
    store.append_audit(name, record(who, "rollout-stop", automatic=automatic, reason=reason[:1500],
                                    version=rollout.version, mode=rollout.mode))
    return rollout


# the registry's face names them so: serving and the CLI reach roll-outs through `from registry import ...`
current_rollout, start_rollout, stop_rollout = current, start, stop
