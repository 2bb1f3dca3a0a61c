"""Every kind of audit record, in one table: the ``action`` each record carries and what writes it.

:func:`registry.guard.record` refuses an action that is not listed here, and
docs/team-mode.md prints :func:`markdown_list` between its ``audited-events`` markers
(``python -m registry.events``; tests/test_registry_hostile.py checks they agree).
"""

from __future__ import annotations

from enum import Enum


class AuditEvent(str, Enum):
    """The ``action`` field of an audit record."""

    REGISTER = "register"
    ALIAS = "alias"
    APPROVE = "approve"
    PROMOTE = "promote"
    REFUSE = "refuse"
    ROLLBACK = "rollback"
    CANARY = "canary"
    SHADOW = "shadow"
    ROLLOUT_STOP = "rollout-stop"
    DENIED = "denied"
    INTEGRITY = "integrity"
    DISCARD = "discard"
    HTTP_DENIED = "http-denied"
    SCORE = "score"
    ALERT = "alert"
    REVIEW = "review"


# what each record says, in the order the docs list them
EVENT_TEXT: dict[AuditEvent, str] = {
    AuditEvent.REGISTER: "a version registered: source, sha256, run, alias, the policy recorded",
    AuditEvent.ALIAS: "an alias moved (`civicml alias`): from, to",
    AuditEvent.APPROVE: "a release manager's approval of one version (bound to its sha256), with a note",
    AuditEvent.PROMOTE: "a promotion: from, to, every gate's figure, bound and verdict, approvals, held-out set, "
                        "policy, variants; `forced` and `reason` when `--force` passed the input contract",
    AuditEvent.REFUSE: "a promotion refused by its gates (the same fields as `promote`)",
    AuditEvent.ROLLBACK: "a rollback: from, to, reason",
    AuditEvent.CANARY: "a canary started: version, weight, limits",
    AuditEvent.SHADOW: "a shadow roll-out started: version, weight, limits",
    AuditEvent.ROLLOUT_STOP: "a roll-out ended, by command or automatically by a replica (with the failure "
                             "behind it)",
    AuditEvent.DENIED: "a refused call of the CLI or Python API: no, wrong, expired or revoked token, or a role "
                       "without the permission (who, what was attempted, why)",
    AuditEvent.INTEGRITY: "artifacts that failed verification on resolve, serve, promote, compare or rollback",
    AuditEvent.DISCARD: "a half-registered version removed with everything its registration wrote",
    AuditEvent.HTTP_DENIED: "HTTP 401 and 403 answers of a server (inference and /explain), one record per "
                            "caller, route, status and minute with their count",
    AuditEvent.SCORE: "a batch scoring job (`civicml score`): version and variant that answered, the inputs and "
                      "their fingerprint, rows scored and rejected, the output, the job's MLflow run",
    AuditEvent.ALERT: "a monitoring threshold crossed (`civicml monitor`): kind (drift, quality, estimated_quality), "
                      "window, group, column, version and arm, value and threshold, the policy's thresholds, the "
                      "monitoring run, and what the webhook answered; each alert once (`alert_key`)",
    AuditEvent.REVIEW: "a person's review of one served answer (`civicml review`): answer id, version, variant "
                       "and group that answered, the model's answer, the decision (kept as the answer's label) "
                       "and the reason",
}


def is_event(action: str) -> bool:
    return action in {e.value for e in AuditEvent}


def markdown_list() -> str:
    """The audited events as docs/team-mode.md prints them."""
    return "".join(f"- `{event.value}`: {EVENT_TEXT[event]}\n" for event in AuditEvent)


if __name__ == "__main__":  # `python -m registry.events`: the list docs/team-mode.md prints
    print(markdown_list(), end="")
