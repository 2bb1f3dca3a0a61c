"""Guessing a column's type, and noticing columns that look like personal data.

Both look at a sample of the values and at the column's name; both are used by
``civicml init`` (to write a first use-case file) and by the data step (the
privacy check that stops undeclared personal data before anything is trained).
Messages name columns and reasons, never values.
"""

from __future__ import annotations

import re

import pandas as pd

from projects.masking import EMAIL, PHONE

SAMPLE = 500
ADDRESS = re.compile(
    r"\b\d{1,6}\s+(?:[NSEW]\.?\s+)?(?:[A-Z0-9][A-Za-z0-9'.-]*\s+){1,4}"
    r"(?:St|Street|Ave|Avenue|Rd|Road|Blvd|Boulevard|Dr|Drive|Ln|Lane|Way|Ct|Court|Pl|Place|Ter|Terrace|Pkwy|Hwy)"
    r"\b\.?")
PERSON = re.compile(r"^[A-Z][a-z]+(?:[-'][A-Z][a-z]+)?(?:\s+[A-Z]\.?)?\s+[A-Z][a-z]+(?:[-'][A-Z][a-z]+)?$")
SSN = re.compile(r"^\d{3}-\d{2}-\d{4}$")
_NAME_HINT = re.compile(r"(^|_)(name|first|last|surname|owner|contact|resident|reporter|complainant|"
                        r"applicant|tenant|caller|person)($|_)", re.I)
_EMAIL_HINT = re.compile(r"e_?mail", re.I)
_PHONE_HINT = re.compile(r"(^|_)(phone|tel|telephone|mobile|cell|fax)($|_)", re.I)
_ADDRESS_HINT = re.compile(r"(^|_)(address|addr|street_address)($|_)", re.I)
_ID_HINT = re.compile(r"(^|_)(id|key|uuid|code|number|no)$", re.I)


def _strings(series: pd.Series) -> pd.Series:
    values = series.dropna()
    if len(values) > SAMPLE:
        values = values.sample(SAMPLE, random_state=0)
    return values.astype(str).str.strip()


def looks_personal(name: str, series: pd.Series) -> str | None:
    """Why a column looks like personal data ("e-mail addresses", ...), or None."""
    values = _strings(series)
    if values.empty:
        return None
    if pd.api.types.is_numeric_dtype(series) and not _PHONE_HINT.search(name):
        return None

    def share(pattern, full=True) -> float:
        hit = values.map(lambda v: bool(pattern.fullmatch(v) if full else pattern.search(v)))
        return float(hit.mean())

    if share(EMAIL) >= 0.3 or (_EMAIL_HINT.search(name) and share(EMAIL, full=False) > 0):
        return "e-mail addresses"
    if share(PHONE) >= 0.3 or (_PHONE_HINT.search(name) and share(PHONE, full=False) > 0):
        return "phone numbers"
    if share(SSN) >= 0.3:
        return "social security numbers"
    if share(ADDRESS, full=False) >= 0.3 and values.str.len().mean() < 80:
        return "exact street addresses"
    if _ADDRESS_HINT.search(name) and share(ADDRESS, full=False) > 0:
        return "exact street addresses"
    person = share(PERSON)
    if person >= 0.6 or (_NAME_HINT.search(name) and person >= 0.3):
        return "people's names"
    words = values.str.split().str.len().mean()
    if words >= 4:  # free text: personal data inside it
        if share(EMAIL, full=False) > 0:
            return "free text holding e-mail addresses"
        if share(PHONE, full=False) > 0:
            return "free text holding phone numbers"
        if share(ADDRESS, full=False) >= 0.05:
            return "free text holding street addresses"
    return None


def guess_type(name: str, series: pd.Series) -> str:
    """numeric, category, text, date, boolean or id (see ``projects.spec.TYPES``)."""
    values = series.dropna()
    n = len(values)
    if n == 0:
        return "category"
    unique = values.nunique() / n
    if pd.api.types.is_bool_dtype(series):
        return "boolean"
    if pd.api.types.is_datetime64_any_dtype(series):
        return "date"
    if pd.api.types.is_numeric_dtype(series):
        if _ID_HINT.search(name) and unique > 0.9:
            return "id"
        if values.nunique() <= 2 and set(values.unique()) <= {0, 1}:
            return "boolean"
        return "numeric"
    text = _strings(series)
    if _looks_like_dates(text):
        return "date"
    if _ID_HINT.search(name) and unique > 0.9:
        return "id"
    words = text.str.split().str.len().mean()
    if words >= 3 or (unique > 0.5 and text.str.len().mean() > 25):
        return "text"
    if text.str.lower().isin({"true", "false", "yes", "no", "y", "n"}).all():
        return "boolean"
    return "category"


def _looks_like_dates(values: pd.Series) -> bool:
    if values.empty or not values.str.contains(r"\d", regex=True).mean() > 0.9:
        return False
    if values.str.fullmatch(r"-?\d+(\.\d+)?").mean() > 0.5:  # plain numbers are not dates
        return False
    parsed = pd.to_datetime(values, errors="coerce", format="mixed")
    return bool(parsed.notna().mean() >= 0.9)


__all__ = ["guess_type", "looks_personal"]
