"""How recorded answers' inputs are masked: by the same rules as the use case's training data
(:class:`RecordMasking`), before anything is stored; and :func:`plain`, an input or answer value as JSON can
hold it. :mod:`monitoring.records` stores what this returns."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from projects.masking import Masker


@dataclass(frozen=True)
class RecordMasking:
    """How a use case's inputs are stored: the same rules as its training data.

    ``features``: the columns kept (None: every column but ``pii_columns``); ``pii_columns``: dropped, their
    values first seed the masker (a caller who names themself in the text is caught); every text value of
    a kept column is masked. ``group``: the column whose value is the record's group (e.g. ``district``)."""

    features: tuple[str, ...] | None = None
    pii_columns: tuple[str, ...] = ()
    group: str | None = None

    @classmethod
    def for_use_case(cls, use_case, group: str | None = None) -> "RecordMasking":
        """The use case's masking rules; ``group`` defaults to the first ``report_by`` column of its
        promotion policy (311: ``district``)."""
        features, pii = _use_case_columns(use_case)
        if group is None:
            group = _policy_group(use_case)
        return cls(features=features, pii_columns=pii, group=group)

    def _name_columns(self) -> tuple[str, ...]:
        """The personal columns that may hold names: all but phones and e-mails (found by their patterns)."""
        return _name_columns(tuple(self.pii_columns))

    @functools.cached_property
    def _plan(self) -> tuple[tuple[str, ...], tuple[str, ...] | None, frozenset]:
        """(the name columns, the kept feature columns or None for "every column but the personal ones",
        the personal columns): worked out once, not for every recorded row."""
        pii = frozenset(self.pii_columns)
        kept = None if self.features is None else tuple(c for c in self.features if c not in pii)
        return self._name_columns(), kept, pii

    def mask(self, inputs: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
        """The masked inputs to store, and the group value."""
        name_columns, kept, pii = self._plan
        names = [v for c in name_columns if isinstance(v := inputs.get(c), str)]
        masker = Masker(names) if names else _NO_NAMES
        out = {}
        for column in (kept if kept is not None else [c for c in inputs if c not in pii]):
            if column in inputs:
                value = inputs[column]
                out[str(column)] = masker.mask(value) if isinstance(value, str) else plain(value)
        group = inputs.get(self.group) if self.group else None
        return out, (None if group is None else str(group))

    def mask_many(self, rows: list[Mapping[str, Any]]) -> list[tuple[dict[str, Any], str | None]]:
        """``[self.mask(r) for r in rows]``, the texts of rows that name no one in a personal column masked
        together (:meth:`projects.masking.Masker.mask_many`: a few scans of a batch instead of three tests of
        each text); a row that does name someone is masked on its own, by its own names."""
        name_columns, kept, pii = self._plan
        out, texts, dicts, columns = [], [], [], []
        for inputs in rows:
            for column in name_columns:  # a row naming someone: masked on its own, by its names
                if isinstance(inputs.get(column), str):
                    out.append(self.mask(inputs))
                    break
            else:
                out.append(self._mask_plain(inputs, kept, pii, texts, dicts, columns))
        for masked, column, text in zip(dicts, columns, _NO_NAMES.mask_many(texts)):
            masked[column] = text
        return out

    def _mask_plain(self, inputs, kept, pii, texts, dicts, columns) -> tuple[dict[str, Any], str | None]:
        """A row that names no one: its kept values, its texts left for one masking of them all."""
        masked = {}
        for column in (kept if kept is not None else [c for c in inputs if c not in pii]):
            value = inputs.get(column, _ABSENT)
            if isinstance(value, str):
                texts.append(value)
                dicts.append(masked)
                columns.append(column if column.__class__ is str else str(column))
            elif value is not _ABSENT:
                masked[str(column)] = plain(value)
        group = inputs.get(self.group) if self.group else None
        return masked, None if group is None else str(group)

    def mask_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """A frame of inputs masked as a training set is (one masker knows every name of every row's personal
        columns, as :func:`projects.masking.mask_frame` does): a reference made from raw traffic."""
        names = {v for c in self._name_columns() if c in frame.columns for v in frame[c].dropna().astype(str)}
        masker = Masker(names)
        keep = [c for c in (self.features if self.features is not None else frame.columns)
                if c in frame.columns and c not in self.pii_columns]
        out = frame[keep].copy()
        for column in keep:
            if not pd.api.types.is_numeric_dtype(out[column]):
                out[column] = out[column].map(lambda v: masker.mask(v) if isinstance(v, str) else v)
        return out


_ABSENT = object()  # a column a row does not hold (inputs.get's default: None is a value)
_NO_NAMES = Masker()  # e-mails, phones and introductions: a row that names no one in a personal column


@functools.lru_cache(maxsize=64)
def _name_columns(pii_columns: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(c for c in pii_columns if not any(w in c.lower() for w in ("phone", "mail", "tel")))


_COMMON_PII = ("name", "reporter_name", "caller_name", "phone", "contact_phone", "email", "contact_email")


def _use_case_columns(use_case) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
    spec = getattr(use_case, "spec", None)
    if spec is not None and getattr(spec, "privacy", None) is not None:  # a use case declared in YAML
        p = spec.privacy
        features = tuple(spec.features) if getattr(spec, "features", None) else None
        return features, tuple(dict.fromkeys((*p.drop, *p.hash, *_COMMON_PII)))
    if getattr(use_case, "name", None) == "service_requests":
        from projects.service_requests import FEATURES
        from projects.service_requests.integrate import PII

        return tuple(FEATURES), tuple(dict.fromkeys((*PII, *_COMMON_PII)))
    return None, _COMMON_PII


def _policy_group(use_case) -> str | None:
    path = getattr(use_case, "policy_file", None)
    if not path or not Path(path).exists():
        return None
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError:
        return None
    by = data.get("report_by") if isinstance(data, dict) else None
    return str(by[0]) if isinstance(by, list) and by else None


def plain(value: Any) -> Any:
    """A value as JSON holds it: numpy scalars as Python's, NaN and infinities as None, anything else
    unknown as its text."""
    kind = value.__class__
    if kind is str or kind is int or kind is bool or value is None:  # most values: as they are, at once
        return value
    if kind is float:
        return value if math.isfinite(value) else None
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
