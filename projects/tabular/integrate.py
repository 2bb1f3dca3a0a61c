"""Department exports in, one typed, cleaned and private frame out, as a use-case file says.

In order: read each source (CSV, Parquet, JSON; globs), rename columns, map
category codes, convert units, parse dates (to UTC, from the declared time zone),
join the sources (on keys, and on the nearest earlier time within a tolerance
through ``pandas.merge_asof``), then check the target, the declared types and
personal data, and apply privacy (drop, hash, mask).

A file that cannot make sense stops here with one line (``InvalidInput``): a
missing column, a target with one class, unparseable dates, a join that drops
every row, a declared type the values do not have, undeclared personal data.
The report (``Dataset.report``) counts what was dropped or fixed and names
columns, never values.
"""

from __future__ import annotations

import glob
import hashlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from civicml.booleans import SPELLINGS, model_value, read_boolean
from civicml.errors import InvalidInput, NotFound
from projects.masking import Masker
from projects.spec import Source, UseCaseSpec, did_you_mean, duration
from projects.tabular.detect import ADDRESS, YEARS, guess_type, looks_personal

BAD_DATES = 0.2  # more than this share of unparseable dates in a column stops the data step
BAD_NUMBERS = 0.05


def source_files(spec: UseCaseSpec, source: Source) -> list[Path]:
    pattern = str(spec.resolve(source.path))
    if any(c in pattern for c in "*?["):
        files = sorted(Path(p) for p in glob.glob(pattern, recursive=True))
    else:
        files = [Path(pattern)] if Path(pattern).exists() else []
    if not files:
        raise NotFound(f"{spec.name}: source file not found: {source.path} (looked for {pattern})")
    return files


def read_table(path: Path, fmt: str | None = None) -> pd.DataFrame:
    fmt = fmt or {".csv": "csv", ".txt": "csv", ".tsv": "csv", ".parquet": "parquet", ".pq": "parquet",
                  ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl"}.get(path.suffix.lower())
    try:
        if fmt == "csv":
            return pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",", dtype_backend="numpy_nullable"
                               ).pipe(_plain)
        if fmt == "parquet":
            return pd.read_parquet(path)
        if fmt == "json":
            try:
                return pd.read_json(path)
            except ValueError:
                return pd.read_json(path, lines=True)
        if fmt == "jsonl":
            return pd.read_json(path, lines=True)
    except (ValueError, OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise InvalidInput(f"cannot read {path.name} as {fmt}: {str(err).splitlines()[0][:120]}") from None
    raise InvalidInput(f"{path.name}: unknown file format '{path.suffix}' (use csv, parquet or json, "
                       f"or say 'format:')")


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Nullable extension dtypes back to numpy ones (float64 for numbers, object for strings)."""
    out = {}
    for c in frame.columns:
        s = frame[c]
        if pd.api.types.is_bool_dtype(s) and not s.isna().any():
            out[c] = s.astype(bool)
        elif pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
            out[c] = s.astype("float64")
        else:
            out[c] = s.astype(object).where(s.notna(), None)
    return pd.DataFrame(out, index=frame.index)


def _need(frame: pd.DataFrame, column: str, where: str) -> None:
    if column not in frame.columns:
        raise InvalidInput(f"{where}: no column '{column}'{did_you_mean(column, frame.columns)} "
                           f"(columns: {', '.join(map(str, frame.columns))})")


def parse_dates(series: pd.Series, column: str, where: str, fmt: str | None, zone: str | None,
                report: dict) -> pd.Series:
    present = series.notna() & (series.astype(str).str.strip() != "")
    if pd.api.types.is_datetime64_any_dtype(series):
        when = series
    elif _bare_years(series):  # 2019 is 1 January 2019, not 2019 nanoseconds after 1970
        when = pd.to_datetime(series.astype("Int64").astype(str), format="%Y", errors="coerce")
    else:
        when = pd.to_datetime(series.where(present, None), errors="coerce", format=fmt or "mixed",
                              utc=False if zone else None)
        if when.dtype == object:  # mixed offsets: read as UTC
            when = pd.to_datetime(series.where(present, None), errors="coerce", format=fmt or "mixed", utc=True)
    bad = int((present & when.isna()).sum())
    if present.sum() and bad / present.sum() > BAD_DATES:
        raise InvalidInput(f"{where}: column '{column}': {bad} of {int(present.sum())} values are not dates"
                           + (f" in the format {fmt}" if fmt else "") + " (say 'date_format:' or fix the file)")
    if bad:
        report.setdefault("unparseable_dates", {})[column] = bad
    if getattr(when.dt, "tz", None) is None:
        if zone:
            when = when.dt.tz_localize(zone, ambiguous="NaT", nonexistent="shift_forward")
    if getattr(when.dt, "tz", None) is not None:
        when = when.dt.tz_convert("UTC").dt.tz_localize(None)
    return when


def _bare_years(series: pd.Series) -> bool:
    if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        return False
    values = series.dropna().astype(float)
    return bool(len(values)) and bool(((values == values.round()) & values.between(*YEARS)).all())


def read_source(spec: UseCaseSpec, i: int, files: list[Path], report: dict) -> pd.DataFrame:
    source = spec.sources[i]
    where = f"{spec.name}: source {source.path}"
    parts = [read_table(p, source.format) for p in files]
    frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    for old in source.rename:
        _need(frame, old, f"{where} (rename)")
    frame = frame.rename(columns=source.rename)
    for column, codes in source.categories.items():
        _need(frame, column, f"{where} (categories)")
        text = frame[column].map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v))
                                 else (str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)))
        mapped = text.map(codes)
        unknown = int((text.notna() & mapped.isna()).sum())
        if unknown:
            report.setdefault("unmapped_codes", {})[column] = unknown
        frame[column] = mapped.where(text.notna() & mapped.notna(), text).astype(object)
    for column, unit in source.units.items():
        _need(frame, column, f"{where} (units)")
        values = pd.to_numeric(frame[column], errors="coerce")
        frame = frame.drop(columns=[column])
        frame[unit.to] = values * unit.factor + unit.offset
    date_columns = list(source.dates) + [c for c, t in spec.types.items()
                                         if t == "date" and c in frame.columns and c not in source.dates]
    for column in date_columns:
        _need(frame, column, f"{where} (dates)")
        frame[column] = parse_dates(frame[column], column, where, source.date_format, source.timezone.get(column),
                                    report)
    for column in source.timezone:
        if column not in date_columns:
            raise InvalidInput(f"{where}: field 'timezone.{column}': list '{column}' under 'dates' too")
    report.setdefault("sources", []).append({"path": source.path, "files": len(files), "rows": len(frame),
                                             "columns": len(frame.columns)})
    return frame


def _align_keys(left: pd.DataFrame, right: pd.DataFrame, keys) -> tuple[pd.DataFrame, pd.DataFrame]:
    for k in keys:
        if left[k].dtype != right[k].dtype:
            left = left.assign(**{k: _key_text(left[k])})
            right = right.assign(**{k: _key_text(right[k])})
    return left, right


def _key_text(s: pd.Series) -> pd.Series:
    return s.map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v))
                 else (str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)))


def join(spec: UseCaseSpec, i: int, left: pd.DataFrame, right: pd.DataFrame, report: dict) -> pd.DataFrame:
    source = spec.sources[i]
    j = source.join
    where = f"{spec.name}: join of {source.path}"
    for k in j.on:
        _need(left, k, f"{where} (left side)")
        _need(right, k, f"{where}")
    marker = f"__civicml_matched_{i}"
    right = right.assign(**{marker: True})
    clash = [c for c in right.columns if c in left.columns and c not in j.on
             and not (j.time and c == j.time.right)]
    suffix = "_" + Path(source.path).stem.replace("*", "").strip("_") if clash else ""
    right = right.rename(columns={c: f"{c}{suffix}" for c in clash})
    left, right = _align_keys(left, right, j.on)
    if j.time is not None:
        _need(left, j.time.left, f"{where} (time, left side)")
        _need(right, j.time.right, f"{where} (time)")
        for side, column in ((left, j.time.left), (right, j.time.right)):
            if not pd.api.types.is_datetime64_any_dtype(side[column]):
                raise InvalidInput(f"{where}: time column '{column}' is not a date; list it under 'dates'")
        left = left.assign(**{j.time.left: left[j.time.left].astype("datetime64[ns]")})
        right = right.assign(**{j.time.right: right[j.time.right].astype("datetime64[ns]")})
        left_sorted = left.assign(__row=np.arange(len(left))).dropna(subset=[j.time.left])
        left_sorted = left_sorted.sort_values(j.time.left, kind="stable")
        right_sorted = right.dropna(subset=[j.time.right]).sort_values(j.time.right, kind="stable")
        merged = pd.merge_asof(left_sorted, right_sorted, left_on=j.time.left, right_on=j.time.right,
                               by=list(j.on) or None, direction=j.time.direction,
                               tolerance=duration(j.time.tolerance) if j.time.tolerance else None,
                               suffixes=("", suffix or "_right"))
        merged = merged.sort_values("__row").drop(columns="__row")
        if j.how == "left" and len(merged) < len(left):  # rows without a time stay, unmatched
            missing = left.assign(__row=np.arange(len(left)))[left[j.time.left].isna().to_numpy()]
            merged = pd.concat([merged, missing], ignore_index=True).sort_values("__row").drop(columns="__row")
    else:
        merged = left.merge(right, how=j.how, on=list(j.on), suffixes=("", suffix or "_right"))
    matched = merged[marker].fillna(False).astype(bool) if marker in merged.columns else pd.Series(False)
    if j.how == "inner":
        merged = merged[matched]
    n_matched = int(matched.sum())
    report.setdefault("joins", []).append({"source": source.path, "how": j.how, "on": list(j.on),
                                           "time": j.time.tolerance if j.time else None, "rows_before": len(left),
                                           "rows_after": len(merged), "matched": n_matched})
    if len(merged) == 0 or n_matched == 0:
        keys = ", ".join(j.on) + (f" and {j.time.left}~{j.time.right}" if j.time else "")
        raise InvalidInput(f"{where}: the join on {keys} matches no row of {len(left)}"
                           + (" (it would drop every row)" if j.how == "inner" else "")
                           + ": check the key columns, their formats and the time tolerance")
    return merged.drop(columns=[marker]).reset_index(drop=True)


def hash_value(value, salt: str) -> Any:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return hashlib.sha256(f"{salt}\x00{value}".encode()).hexdigest()[:16]


def column_types(spec: UseCaseSpec, frame: pd.DataFrame) -> dict[str, str]:
    types = {}
    for column in frame.columns:
        declared = spec.types.get(column)
        if declared:
            types[column] = declared
        elif column in spec.privacy.hash:
            types[column] = "id"
        elif pd.api.types.is_datetime64_any_dtype(frame[column]):
            types[column] = "date"
        else:
            types[column] = guess_type(column, frame[column])
    return types


def check_types(spec: UseCaseSpec, frame: pd.DataFrame, report: dict) -> pd.DataFrame:
    where = f"{spec.name}: field 'types'"
    for column, kind in spec.types.items():
        if column not in frame.columns:
            if column in spec.privacy.drop:
                continue
            raise InvalidInput(f"{where}: no column '{column}'{did_you_mean(column, frame.columns)}")
        s = frame[column]
        present = s.notna()
        if kind in ("numeric", "year") and not pd.api.types.is_numeric_dtype(s):
            values = pd.to_numeric(s, errors="coerce")
            bad = int((present & values.isna()).sum())
            if present.sum() and bad / present.sum() > BAD_NUMBERS:
                raise InvalidInput(f"{where}: column '{column}' is declared {kind} but {bad} of "
                                   f"{int(present.sum())} values are not numbers")
            if bad:
                report.setdefault("not_numbers", {})[column] = bad
            frame[column] = values
        elif kind == "date" and not pd.api.types.is_datetime64_any_dtype(s):
            frame[column] = parse_dates(s, column, f"{spec.name}", None, None, report)
        elif kind == "boolean":
            ok = s.map(read_boolean).notna() | ~present
            if not ok.all():
                raise InvalidInput(f"{where}: column '{column}' is declared boolean but {int((~ok).sum())} "
                                   f"values are not {SPELLINGS}")
    return frame


def personal_columns(spec: UseCaseSpec, frame: pd.DataFrame) -> dict[str, str]:
    """Undeclared columns that look like personal data: column -> why."""
    if not spec.privacy.check:
        return {}
    out = {}
    for column in frame.columns:
        if column in spec.privacy.declared or column == spec.target:
            continue
        why = looks_personal(str(column), frame[column])
        if why:
            out[str(column)] = why
    return out


class _TextMasker(Masker):
    def mask(self, text):
        text = super().mask(text)
        return ADDRESS.sub("[ADDRESS]", text) if isinstance(text, str) else text


def apply_privacy(spec: UseCaseSpec, frame: pd.DataFrame, report: dict, secret: Callable[[], str]) -> pd.DataFrame:
    """Drop, mask and hash the declared columns; ``secret()`` gives the home's salt (asked only to hash)."""
    p = spec.privacy
    for kind in ("drop", "hash", "mask"):
        for column in getattr(p, kind):
            if column not in frame.columns:
                raise InvalidInput(f"{spec.name}: field 'privacy.{kind}': no column '{column}'"
                                   f"{did_you_mean(column, frame.columns)}")
    known_names = [v for c in p.drop + p.hash if c in frame.columns
                   for v in frame[c].dropna().astype(str).tolist() if " " in v]
    masker = _TextMasker(known_names)
    for column in p.mask:
        frame[column] = frame[column].map(masker.mask)
    salt = f"{secret()}:{spec.name}" if p.hash else ""
    for column in p.hash:
        frame[column] = frame[column].map(lambda v: hash_value(v, salt))
    frame = frame.drop(columns=list(p.drop))
    report["privacy"] = {"dropped": list(p.drop), "hashed": list(p.hash), "masked": list(p.mask),
                         "allowed": list(p.allow)}
    return frame


def integrate(spec: UseCaseSpec, files: list[list[Path]], secret: Callable[[], str]
              ) -> tuple[pd.DataFrame, dict[str, str], dict]:
    """The integrated frame (all columns, privacy applied), the column types, and the report.

    ``secret()`` gives the salt of hashed columns (``projects.tabular.secret``)."""
    report: dict[str, Any] = {}
    frame = read_source(spec, 0, files[0], report)
    for i in range(1, len(spec.sources)):
        frame = join(spec, i, frame, read_source(spec, i, files[i], report), report)
    where = f"{spec.name}"
    _need(frame, spec.target, f"{where}: target")
    personal = personal_columns(spec, frame)
    if personal:
        listed = "; ".join(f"'{c}' looks like {why}" for c, why in personal.items())
        raise InvalidInput(f"{where}: undeclared personal data: {listed}. Declare each under privacy: "
                           f"drop, hash or mask (or allow, if a person has checked it is not personal)")
    frame = apply_privacy(spec, frame, report, secret)
    frame = check_types(spec, frame, report)
    before = len(frame)
    frame = frame[frame[spec.target].notna()].reset_index(drop=True)
    if before - len(frame):
        report["rows_without_target"] = before - len(frame)
    if spec.task == "classification":
        frame[spec.target] = _key_text(frame[spec.target])
        classes = frame[spec.target].nunique()
        if classes < 2:
            raise InvalidInput(f"{where}: target '{spec.target}' has {classes} class"
                               f"{'es' if classes != 1 else ''} in {len(frame)} rows; classification needs two or more")
        report["classes"] = int(classes)
    else:
        values = pd.to_numeric(frame[spec.target], errors="coerce")
        bad = int(values.isna().sum())
        if len(frame) and bad / len(frame) > BAD_NUMBERS:
            raise InvalidInput(f"{where}: target '{spec.target}' must be numeric for {spec.task}, but {bad} of "
                               f"{len(frame)} values are not numbers")
        frame[spec.target] = values
        frame = frame[values.notna()].reset_index(drop=True)
    if len(frame) < 10:
        raise InvalidInput(f"{where}: only {len(frame)} usable rows after cleaning; need at least 10")
    report["rows"] = len(frame)
    return frame, column_types(spec, frame), report


def model_inputs(frame: pd.DataFrame, features: list[str], types: dict[str, str]) -> pd.DataFrame:
    """Feature columns as a model takes them: numbers (and years) as float, categories and text as strings, dates
    as ISO text, yes/no values as "true"/"false" (``civicml.booleans``; "missing" where the file has none)."""
    out = {}
    for column in features:
        s = frame[column]
        kind = types[column]
        if kind in ("numeric", "year"):
            out[column] = pd.to_numeric(s, errors="coerce").astype("float64")
        elif kind == "boolean":  # one value per meaning, as serving reads requests (civicml.booleans)
            out[column] = s.map(model_value).where(s.notna(), "missing").fillna("missing").astype(object)
        elif kind == "date":
            when = pd.to_datetime(s, errors="coerce")
            out[column] = when.dt.strftime("%Y-%m-%dT%H:%M:%S").where(when.notna(), "").astype(object)
        elif kind == "text":
            out[column] = s.where(s.notna(), "").astype(str).astype(object)
        else:  # category, boolean
            out[column] = _key_text(s).where(s.notna(), "missing").astype(object)
    return pd.DataFrame(out, index=frame.index)


__all__ = ["integrate", "model_inputs", "source_files", "read_table"]
