"""How CivicML reads a yes/no value, wherever it comes from: one rule for every floor.

A department's file (``civicml init`` guessing types, the data step training on it), a JSON or CSV
request (``serving.dataplane``) and ``civicml explain --input`` all read a boolean column through
:func:`read_boolean`, so that ``true``, ``1``, ``"yes"``, ``"Y"`` and ``"TRUE"`` give a model the same
value and ``"maybe"`` is refused everywhere. A model sees :data:`TRUE` or :data:`FALSE` (text, one-hot
encoded like a category); a missing value in training data is the category ``"missing"``.
"""

from __future__ import annotations

import numbers

import numpy as np

TRUE, FALSE = "true", "false"
TRUE_WORDS = ("true", "t", "yes", "y", "1", "1.0")
FALSE_WORDS = ("false", "f", "no", "n", "0", "0.0")
SPELLINGS = "true/false, yes/no, y/n, t/f or 1/0 (any case)"
_WORDS = {**{w: True for w in TRUE_WORDS}, **{w: False for w in FALSE_WORDS}}


def read_boolean(value) -> bool | None:
    """True or False for a yes/no value in any usual spelling; None for anything else (missing included)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Real):
        return True if value == 1 else False if value == 0 else None
    if isinstance(value, str):
        return _WORDS.get(value.strip().lower())
    return None


def model_value(value) -> str | None:
    """What a model is given for ``value``: :data:`TRUE`, :data:`FALSE`, or None if it is not a yes/no value."""
    read = read_boolean(value)
    return None if read is None else (TRUE if read else FALSE)


def string_pattern() -> str:
    """The strings :func:`read_boolean` accepts, as a JSON Schema (ECMA 262) pattern: any case, spaces around."""
    def any_case(word: str) -> str:
        return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else ("[.]" if c == "." else c) for c in word)

    return "^\\s*(" + "|".join(any_case(w) for w in (*TRUE_WORDS, *FALSE_WORDS)) + ")\\s*$"


__all__ = ["FALSE", "SPELLINGS", "TRUE", "model_value", "read_boolean", "string_pattern"]
