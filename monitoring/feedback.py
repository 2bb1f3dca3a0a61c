"""Late labels: true outcomes joined to the answers they belong to, days later, idempotently.

``add_feedback(store, [(answer_id, outcome), ...])`` writes each outcome beside its answer and says what
happened to every id: joined now, already known (the same outcome was given before), conflicting (another
outcome was given before: the first is kept, and the id is named), or unknown (no such answer is stored:
named, never dropped silently). Sending the same file twice changes nothing the second time.

``read_outcomes(path)`` reads a CSV with the columns ``answer_id`` and ``outcome`` (what
``civicml feedback NAME --file outcomes.csv`` sends); a file that is not that is one
:class:`~civicml.errors.InvalidInput` line naming the problem and its row.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from civicml.errors import InvalidInput, NotFound
from monitoring.records import RecordStore, is_answer_id

MAX_UNKNOWN_LISTED = 20


@dataclass(frozen=True)
class FeedbackResult:
    joined: int
    already_known: int
    unknown_ids: tuple[str, ...] = ()
    conflicting_ids: tuple[str, ...] = field(default=())

    @property
    def unknown(self) -> int:
        return len(self.unknown_ids)

    @property
    def conflicting(self) -> int:
        return len(self.conflicting_ids)

    def to_dict(self) -> dict[str, Any]:
        return {"joined": self.joined, "already_known": self.already_known, "unknown": self.unknown,
                "conflicting": self.conflicting, "unknown_ids": list(self.unknown_ids),
                "conflicting_ids": list(self.conflicting_ids)}

    def text(self) -> str:
        line = (f"{self.joined} joined, {self.already_known} already known, {self.unknown} unknown, "
                f"{self.conflicting} conflicting (first outcome kept)")
        if self.unknown_ids:
            shown = ", ".join(self.unknown_ids[:MAX_UNKNOWN_LISTED])
            more = f" and {self.unknown - MAX_UNKNOWN_LISTED} more" if self.unknown > MAX_UNKNOWN_LISTED else ""
            line += f"\nunknown answer ids: {shown}{more}"
        if self.conflicting_ids:
            line += f"\nconflicting answer ids: {', '.join(self.conflicting_ids[:MAX_UNKNOWN_LISTED])}"
        return line


def check_pairs(pairs: Iterable[tuple[Any, Any]], where: str = "feedback") -> list[tuple[str, Any]]:
    """``(answer_id, outcome)`` pairs, checked: an id is 32 hex characters, an outcome is not empty; the same id
    twice with two outcomes is refused (which one is true?)."""
    out: list[tuple[str, Any]] = []
    seen: dict[str, Any] = {}
    for number, pair in enumerate(pairs, 1):
        try:
            answer_id, outcome = pair
        except (TypeError, ValueError):
            raise InvalidInput(f"{where}: item {number} is not an (answer_id, outcome) pair") from None
        answer_id = str(answer_id).strip().lower()
        if not is_answer_id(answer_id):
            raise InvalidInput(f"{where}: item {number}: answer_id must be 32 hex characters, got {pair[0]!r}")
        if outcome is None or (isinstance(outcome, str) and not outcome.strip()) or \
                (isinstance(outcome, float) and outcome != outcome):
            raise InvalidInput(f"{where}: item {number}: outcome of {answer_id} is empty")
        if isinstance(outcome, str):
            outcome = outcome.strip()
        if answer_id in seen and seen[answer_id] != outcome:
            raise InvalidInput(f"{where}: answer_id {answer_id} is given two outcomes ({seen[answer_id]!r} and "
                               f"{outcome!r})")
        seen[answer_id] = outcome
        out.append((answer_id, outcome))
    return out


def add_feedback(store: RecordStore, pairs: Iterable[tuple[str, Any]], numeric: bool | None = None) -> FeedbackResult:
    """Join outcomes to stored answers (see the module's docstring). ``numeric``: outcomes are numbers (a
    regressor's); None: a text outcome that reads as a number is stored as one only if the answer it joins
    is a number."""
    pairs = check_pairs(pairs)
    if numeric:
        pairs = [(i, _number(o, i)) for i, o in pairs]
    elif numeric is None:
        pairs = _numbers_where_answers_are(store, pairs)
    result = store.set_outcomes(pairs)
    return FeedbackResult(joined=len(result["joined"]), already_known=len(result["already_known"]),
                          unknown_ids=tuple(result["unknown"]), conflicting_ids=tuple(result["conflicting"]))


def _number(value: Any, answer_id: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"feedback: outcome of {answer_id} must be a number, got {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise InvalidInput(f"feedback: outcome of {answer_id} must be a finite number, got {value!r}")
    return number


def _numbers_where_answers_are(store: RecordStore, pairs: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    if not any(isinstance(o, str) for _, o in pairs):
        return pairs
    kinds = store.answer_kinds([i for i, _ in pairs])
    out = []
    for answer_id, outcome in pairs:
        if isinstance(outcome, str) and kinds.get(answer_id) == "number":
            outcome = _number(outcome, answer_id)
        out.append((answer_id, outcome))
    return out


def read_outcomes(path: str | Path) -> list[tuple[str, str]]:
    """The ``(answer_id, outcome)`` rows of a CSV file with those two columns (others are ignored)."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"outcomes file not found: {path}")
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            columns = [str(c).strip().lower() for c in header]
            missing = [c for c in ("answer_id", "outcome") if c not in columns]
            if missing:
                raise InvalidInput(f"{path.name}: no column '{missing[0]}' (a feedback file has the columns "
                                   f"answer_id,outcome; found: {', '.join(map(str, header)) or 'nothing'})")
            id_key, outcome_key = header[columns.index("answer_id")], header[columns.index("outcome")]
            rows = [(row.get(id_key), row.get(outcome_key)) for row in reader]
    except UnicodeDecodeError:
        raise InvalidInput(f"{path.name}: not a UTF-8 text (CSV) file") from None
    except csv.Error as err:
        raise InvalidInput(f"{path.name}: not a readable CSV file ({err})") from None
    if not rows:
        raise InvalidInput(f"{path.name}: no rows under the header answer_id,outcome")
    for number, (answer_id, outcome) in enumerate(rows, 2):
        if answer_id is None or outcome is None:
            raise InvalidInput(f"{path.name}: line {number} has fewer columns than the header")
    return check_pairs(rows, where=path.name)
