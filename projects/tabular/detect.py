"""Guessing a column's type, and noticing columns that look like personal data.

Both look at a sample of the values and at the column's name; both are used by
``civicml init`` (to write a first use-case file) and by the data step (the
privacy check that stops undeclared personal data before anything is trained).
Messages name columns and reasons, never values.
"""

from __future__ import annotations

import re

import pandas as pd

from civicml.booleans import read_boolean
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
_ID_HINT = re.compile(r"(^|[_ ])(id|key|uuid|guid|code|number|no|rownames|rowid|row_?num(ber)?|index|objectid|fid)$"
                      r"|^unnamed: ?0$|(?-i:(?<=[a-z])I[Dd])$", re.I)
_YEAR_HINT = re.compile(r"(^|_|\b)(year|yr|yyyy|fiscal_?year|fy)(s)?($|_|\b)", re.I)
YEARS = (1900, 2100)  # whole numbers in this range may be bare years
FEW_YEARS = 60


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
    """numeric, category, text, date, year, boolean or id (see ``projects.spec.TYPES``)."""
    return guess(name, series)[0]


def guess(name: str, series: pd.Series) -> tuple[str, str]:
    """(type, why): the type ``civicml init`` proposes for a column, and the reason, in words (no values)."""
    values = series.dropna()
    n = len(values)
    if n == 0:
        return "category", "no values"
    distinct = values.nunique()
    unique = distinct / n
    if pd.api.types.is_bool_dtype(series):
        return "boolean", "true/false values"
    if pd.api.types.is_datetime64_any_dtype(series):
        return "date", "dates"
    if pd.api.types.is_numeric_dtype(series):
        numbers = values.astype("float64")
        whole = bool((numbers == numbers.round()).all())
        if distinct <= 2 and set(numbers.unique()) <= {0.0, 1.0}:
            return "boolean", "0/1 values"
        if whole and _ID_HINT.search(name) and unique > 0.9:
            return "id", "whole numbers, named like an identifier"
        if whole and distinct == n == len(series) and n >= 20 and numbers.max() - numbers.min() == n - 1:
            return "id", "a running number: one per row, no gaps"
        if whole and numbers.between(YEARS[0], YEARS[1]).all():
            if _YEAR_HINT.search(name):
                return "year", f"whole numbers {YEARS[0]}-{YEARS[1]}, named like a year"
            if distinct <= FEW_YEARS and n >= 2 * distinct:
                return "year", f"whole numbers {YEARS[0]}-{YEARS[1]}, {distinct} distinct"
        return "numeric", "numbers"
    text = _strings(series)
    if text.map(read_boolean).notna().all():
        return "boolean", "yes/no values"
    if _looks_like_dates(text):
        return "date", "text that reads as dates"
    if _ID_HINT.search(name) and unique > 0.9:
        return "id", "named like an identifier, one value per row"
    words = text.str.split().str.len().mean()
    if words >= 3 or (unique > 0.5 and text.str.len().mean() > 25):
        return "text", f"free text ({words:.0f} words on average)"
    if distinct == n == len(series) and n >= 20 and not text.str.contains(r"\s").any() \
            and text.str.len().max() <= 40:
        return "id", "codes without spaces, one per row"
    return "category", f"{distinct} distinct values"


def _looks_like_dates(values: pd.Series) -> bool:
    if values.empty or not values.str.contains(r"\d", regex=True).mean() > 0.9:
        return False
    if values.str.fullmatch(r"-?\d+(\.\d+)?").mean() > 0.5:  # plain numbers are not dates
        return False
    parsed = pd.to_datetime(values, errors="coerce", format="mixed")
    return bool(parsed.notna().mean() >= 0.9)


__all__ = ["guess", "guess_type", "looks_personal"]
