"""People's reviews of served answers: a human override, audited, kept beside the answer as its label.

``civicml review ANSWER_ID --decision VALUE --reason TEXT`` (role ``reviewer``; in single-user mode the local
user) calls :func:`review_answer`::

    from monitoring import review_answer, review_counts, labelled_answers
    done = review_answer("5f0c...", "water", "the caller reported a burst main, not a pothole", settings=settings)
    done.changed                    # the decision differs from the model's answer
    review_counts(open_store(settings=settings), model="service-requests-router")  # per version and group
    labelled_answers(store, model)  # every labelled answer, label_source "review" or "feedback"

What one review does, in order, and what stops it before anything is written:

1. the answer id (32 hex characters), the decision and the reason (not empty) are checked;
2. the stored answer is looked up in the home's record store (:func:`monitoring.records.existing_store`:
   never created by a review);
3. the caller must hold ``review`` on the model that answered (:func:`registry.authorize`: a refusal is
   audited on the model, as every registry refusal is);
4. an unknown id is :class:`~civicml.errors.NotFound` (one line, exit code 2), a model that is not registered
   too, and ``--model`` naming another model than the one that answered is :class:`InvalidInput`;
5. in one transaction of the record store: the audit record ``review`` is appended to the model's trail
   (:mod:`registry.events`), the review row is kept beside the answer, and the decision becomes the
   answer's outcome (a review overrides an earlier late label, which the row keeps). If the audit record
   cannot be written, nothing is kept.

The reason is free text a person writes: it is masked as recorded inputs are (e-mails, phones,
introductions) before it reaches the audit trail or the store. Live quality (:func:`monitoring.live_quality`)
counts a reviewed answer as labelled, like any late label; a later late label for it is ``already known`` or
``conflicting`` (the review is kept).
"""

from __future__ import annotations

import datetime as dt
import time as _time
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from civicml.errors import InvalidInput, NotFound
from civicml.settings import Settings
from monitoring.records import RecordStore, existing_store, is_answer_id

MAX_REASON = 500  # characters of a reason kept (the audit record's size is bounded)
COUNT_COLUMNS = ("model", "version", "group", "reviewed", "changed", "confirmed", "reviews")


@dataclass(frozen=True)
class Review:
    """One review as kept: the answer it concerns, the model's answer, the person's decision and reason."""

    answer_id: str
    model: str
    version: str
    variant: str
    arm: str
    group: str | None
    answer: Any
    decision: Any
    previous_outcome: Any
    reason: str
    who: str
    roles: tuple[str, ...]
    when: str
    audit_key: str | None

    @property
    def changed(self) -> bool:
        return str(self.decision) != str(self.answer)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "roles": list(self.roles), "changed": self.changed}

    def text(self) -> str:
        where = f" ({self.group})" if self.group else ""
        verdict = "changed" if self.changed else "confirmed"
        return (f"answer {self.answer_id} of '{self.model}' version {self.version}{where}: answered "
                f"{self.answer!r}, reviewed as {self.decision!r} ({verdict}); audited, and kept as its label")


def review_answer(answer_id: str, decision: Any, reason: str, *, model: str | None = None,
           settings: Settings | None = None) -> Review:
    """Record a person's review of one stored answer (see the module's docstring)."""
    settings = settings or Settings.from_env()
    answer_id, decision, reason = _checked(answer_id, decision, reason)
    store = existing_store(settings)
    try:
        return _review(store, answer_id, decision, reason, model, settings)
    finally:
        if store is not None:
            store.close()


def _review(store: RecordStore | None, answer_id: str, decision: Any, reason: str, model: str | None,
            settings: Settings) -> Review:
    from registry import ModelStore, audit_record, authorize

    found = _stored_answer(store, answer_id)
    registry = ModelStore(settings)
    who = authorize(settings, "review", model or (found or {}).get("model"), registry, answer_id=answer_id)
    if found is None:
        raise NotFound(f"no recorded answer has the id {answer_id} (answers are recorded by "
                       f"`civicml serve --record`; this home's store {'holds no such id' if store else 'is empty'})")
    if model is not None and model != found["model"]:
        raise InvalidInput(f"answer {answer_id} was given by model '{found['model']}', not '{model}'")
    if not registry.exists(found["model"]):
        raise NotFound(f"answer {answer_id} was given by model '{found['model']}', which is not registered here")
    decision = _same_kind(decision, found["answer"], answer_id)
    when = _time.time()
    keys: list[str] = []

    def audit(answer: dict[str, Any]) -> str:
        entry = audit_record(who, "review", answer_id=answer_id, version=answer["version"],
                             variant=answer["variant"], arm=answer["arm"], group=answer["group"],
                             answer=answer["answer"], decision=decision, changed=str(decision) != str(answer["answer"]),
                             previous_outcome=answer["outcome"], reason=reason)
        keys.append(registry.append_audit(answer["model"], entry))
        return keys[-1]

    kept = store.add_review(answer_id, {"decision": decision, "reason": reason,
                                        "roles": ",".join(sorted(who.roles)), "time": when}, audit=audit)
    if kept is None:  # deleted by the size cap between the look-up and the transaction
        raise NotFound(f"no recorded answer has the id {answer_id} (it was just removed by the store's size cap)")
    return Review(answer_id, kept["model"], str(kept["version"]), str(kept["variant"]), str(kept["arm"]),
                  kept["group"], kept["answer"], decision, kept["outcome"], reason, who.name,
                  tuple(sorted(who.roles)), dt.datetime.fromtimestamp(when, dt.timezone.utc).isoformat(
                      timespec="seconds"), keys[-1] if keys else None)


def _checked(answer_id: Any, decision: Any, reason: Any) -> tuple[str, Any, str]:
    from projects.masking import Masker

    answer_id = str(answer_id or "").strip().lower()
    if not is_answer_id(answer_id):
        raise InvalidInput(f"answer id must be 32 hex characters (the X-CivicML-Answer-Id of an answer), "
                           f"got {answer_id!r}")
    if decision is None or (isinstance(decision, str) and not decision.strip()):
        raise InvalidInput("--decision is empty: give the answer that should have been given")
    if isinstance(decision, str):
        decision = decision.strip()
    reason = str(reason or "").strip()
    if not reason:
        raise InvalidInput("--reason is empty: say why the answer is overridden (it is audited)")
    if len(reason) > MAX_REASON:
        raise InvalidInput(f"--reason is {len(reason)} characters; keep it under {MAX_REASON}")
    return answer_id, decision, Masker().mask(reason)


def _stored_answer(store: RecordStore | None, answer_id: str) -> dict[str, Any] | None:
    if store is None:
        return None
    frame = store.read_answers([answer_id])
    return None if frame.empty else frame.iloc[0].to_dict()


def _same_kind(decision: Any, answer: Any, answer_id: str) -> Any:
    """A regressor's decision is a number (what its answers and outcomes are); a classifier's a label."""
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        try:
            number = float(decision)
        except (TypeError, ValueError):
            raise InvalidInput(f"answer {answer_id} is a number ({answer}); --decision must be one too, "
                               f"got {decision!r}") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise InvalidInput(f"--decision must be a finite number, got {decision!r}")
        return number
    return str(decision)


# -- what was reviewed -----------------------------------------------------------------------------
def review_counts(store: RecordStore | None, model: str | None = None) -> pd.DataFrame:
    """Reviews per model, version and group (the use case's group column, e.g. district; ``-`` when none):
    ``reviewed`` answers, of which ``changed`` (the latest decision differs from the model's answer) and
    ``confirmed``, and ``reviews`` (an answer reviewed twice counts twice here). Empty without a store."""
    reviews = store.read_reviews(model) if store is not None else pd.DataFrame(columns=COUNT_COLUMNS)
    if reviews.empty:
        return pd.DataFrame({c: pd.Series(dtype=object if c in COUNT_COLUMNS[:3] else int) for c in COUNT_COLUMNS})
    reviews = reviews.assign(group=reviews["group"].fillna("-").astype(str),
                             changed=reviews["decision"].astype(str) != reviews["answer"].astype(str))
    latest = reviews.drop_duplicates("answer_id", keep="last")
    keys = ["model", "version", "group"]
    counts = latest.groupby(keys).agg(reviewed=("answer_id", "size"), changed=("changed", "sum"))
    counts["confirmed"] = counts["reviewed"] - counts["changed"]
    counts["reviews"] = reviews.groupby(keys).size()
    return counts.reset_index()[list(COUNT_COLUMNS)].astype({c: int for c in COUNT_COLUMNS[3:]})


def labelled_answers(store: RecordStore, model: str | None = None) -> pd.DataFrame:
    """Every labelled answer (inputs masked as stored, the answer, its ``outcome``) with ``label_source``:
    ``review`` where a person's review set it, ``feedback`` where a late label did: what retraining and live
    quality read."""
    records = store.read(model=model)
    labelled = records[records["outcome"].notna()]
    reviewed = set(store.read_reviews(model)["answer_id"])
    return labelled.assign(label_source=["review" if i in reviewed else "feedback" for i in labelled["answer_id"]])


__all__ = ["Review", "labelled_answers", "review_answer", "review_counts"]
