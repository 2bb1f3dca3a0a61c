"""Standardize, clean and mask 311 department sources into one frame.

Each file is read through a schema file (see ``schemas/README.md``) into the
standard schema, then all files are cleaned together:

* unparseable timestamps, missing descriptions and unknown departments: dropped;
* districts: matched case- and space-insensitively; a missing district is
  inferred from the coordinates (nearest district centre);
* coordinates outside the city: dropped;
* cross-source duplicates (same text and district within 30 minutes): the
  first report is kept;
* personal data: masked (``projects.masking``), and its columns dropped.

What was dropped or fixed, and how often, is in ``Dataset.report``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from civicml.errors import InvalidInput, NotFound
from projects.masking import mask_frame
from projects.service_requests.generator import CITY_BOUNDS, DEPARTMENTS, DISTRICTS, TIMEZONE

STANDARD = ("request_id", "created_at", "reporter_name", "phone", "email", "district", "description",
            "department", "lat", "lon", "channel")
REQUIRED = ("created_at", "description", "department")
PII = ("reporter_name", "phone", "email")
SCHEMA_DIR = Path(__file__).parent / "schemas"
_SPEC_KEYS = {"format", "columns", "channel", "timestamp", "coordinates", "district_map", "department_map"}


def find_schema(path: Path) -> Path:
    beside = path.with_name(f"{path.stem}.schema.yaml")
    if beside.exists():
        return beside
    builtin = SCHEMA_DIR / f"{path.stem}.schema.yaml"
    if builtin.exists():
        return builtin
    raise NotFound(f"no schema for source '{path.name}': write {beside.name} beside it "
                   f"(see projects/service_requests/schemas/README.md)")


def load_spec(path: Path) -> dict[str, Any]:
    try:
        spec = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as err:
        raise InvalidInput(f"schema file {path}: not valid YAML ({err.__class__.__name__})") from None
    if not isinstance(spec, dict):
        raise InvalidInput(f"schema file {path}: expected a mapping at the top level")
    unknown = set(spec) - _SPEC_KEYS
    if unknown:
        raise InvalidInput(f"schema file {path}: unknown field '{sorted(unknown)[0]}' "
                           f"(known: {', '.join(sorted(_SPEC_KEYS))})")
    columns = spec.get("columns")
    if not isinstance(columns, dict):
        raise InvalidInput(f"schema file {path}: field 'columns' must map standard names to file columns")
    bad = set(columns) - set(STANDARD)
    if bad:
        raise InvalidInput(f"schema file {path}: 'columns.{sorted(bad)[0]}' is not a standard column "
                           f"(standard: {', '.join(STANDARD)})")
    for name in REQUIRED:
        if name not in columns:
            raise InvalidInput(f"schema file {path}: 'columns.{name}' is required")
    if spec.get("format", "csv") not in ("csv", "parquet", "json"):
        raise InvalidInput(f"schema file {path}: 'format' must be csv, parquet or json")
    return spec


def _read(path: Path, fmt: str) -> pd.DataFrame:
    try:
        if fmt == "csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
        if fmt == "parquet":
            return pd.read_parquet(path)
        return pd.read_json(path, orient="records", dtype=False)
    except Exception as err:  # pandas raises many types for unreadable files
        raise InvalidInput(f"cannot read {path.name} as {fmt}: {err}") from None


def _timestamps(raw: pd.Series, spec: dict) -> pd.Series:
    ts = spec.get("timestamp") or {}
    if "unit" in ts:
        values = pd.to_numeric(raw, errors="coerce")
        return pd.to_datetime(values, unit=ts["unit"], utc=True, errors="coerce")
    parsed = pd.to_datetime(raw, format=ts.get("format"), errors="coerce")
    if parsed.dt.tz is None:
        parsed = parsed.dt.tz_localize(ts.get("timezone", "UTC"), ambiguous="NaT", nonexistent="NaT")
    return parsed.dt.tz_convert("UTC")


def standardize(path: Path, spec: dict) -> pd.DataFrame:
    """One source file in the standard schema (nothing dropped yet)."""
    raw = _read(path, spec.get("format", "csv"))
    columns = spec["columns"]
    missing = [col for col in columns.values() if col not in raw.columns]
    if missing:
        raise InvalidInput(f"source {path.name}: column '{missing[0]}' named in its schema is not in the file")
    out = pd.DataFrame(index=raw.index)
    for name in STANDARD:
        out[name] = raw[columns[name]] if name in columns else None
    out["created_at"] = _timestamps(out["created_at"], spec)
    scale = float((spec.get("coordinates") or {}).get("scale", 1.0))
    for axis in ("lat", "lon"):
        out[axis] = pd.to_numeric(out[axis], errors="coerce") * scale
    if spec.get("district_map"):
        mapping = {str(k): v for k, v in spec["district_map"].items()}
        out["district"] = out["district"].map(lambda v: mapping.get(str(v)) if pd.notna(v) else None)
    if spec.get("department_map"):
        mapping = {str(k): v for k, v in spec["department_map"].items()}
        out["department"] = out["department"].map(lambda v: mapping.get(str(v), v) if pd.notna(v) else None)
    if "channel" not in columns:
        out["channel"] = spec.get("channel", "unknown")
    out["source"] = path.name
    if out["request_id"].isna().all():
        out["request_id"] = [f"{path.stem}-{i}" for i in range(len(out))]
    return out


def _nearest_district(lat: float, lon: float) -> str | None:
    if not (np.isfinite(lat) and np.isfinite(lon)):
        return None
    d = [(lat - x.lat) ** 2 + (lon - x.lon) ** 2 for x in DISTRICTS]
    return DISTRICTS[int(np.argmin(d))].name


def clean(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    report: dict[str, int] = {"rows_read": len(frame)}

    def drop(mask: pd.Series, reason: str) -> None:
        nonlocal frame
        report[reason] = int(mask.sum())
        frame = frame[~mask]

    drop(frame["created_at"].isna(), "dropped_unparseable_timestamp")
    desc = frame["description"].astype("string").str.strip()
    frame = frame.assign(description=desc)
    drop(desc.isna() | (desc == ""), "dropped_missing_description")
    frame = frame.assign(department=frame["department"].astype("string").str.strip().str.lower())
    drop(~frame["department"].isin(DEPARTMENTS), "dropped_unknown_department")
    lat_ok = frame["lat"].between(*CITY_BOUNDS["lat"])
    lon_ok = frame["lon"].between(*CITY_BOUNDS["lon"])
    drop(~(lat_ok & lon_ok), "dropped_outside_city")
    names = {d.name.lower(): d.name for d in DISTRICTS}
    district = frame["district"].map(lambda v: names.get(" ".join(str(v).split()).lower()) if pd.notna(v) else None)
    missing = district.isna()
    district[missing] = [_nearest_district(a, b) for a, b in zip(frame.loc[missing, "lat"], frame.loc[missing, "lon"])]
    report["district_inferred_from_coordinates"] = int(missing.sum())
    frame = frame.assign(district=district, channel=frame["channel"].astype("string").str.strip().str.lower())
    drop(frame["district"].isna(), "dropped_unknown_district")
    # Cross-source duplicates: the same request reported through two channels.
    frame = frame.sort_values("created_at", kind="stable")
    key = frame["description"].str.lower().str.replace(r"\W+", " ", regex=True).str.strip() + "|" + frame["district"]
    gap = frame.groupby(key)["created_at"].diff()
    drop(gap.notna() & (gap <= pd.Timedelta(minutes=30)), "dropped_cross_source_duplicate")
    report["rows_kept"] = len(frame)
    return frame, report


def features(frame: pd.DataFrame) -> pd.DataFrame:
    local = frame["created_at"].dt.tz_convert(TIMEZONE)
    return frame.assign(hour=local.dt.hour.astype("int64"), weekday=local.dt.day_of_week.astype("int64"))


def integrate_sources(paths: list[Path]) -> tuple[pd.DataFrame, dict[str, int]]:
    if not paths:
        raise InvalidInput("no source files given")
    parts = [standardize(p, load_spec(find_schema(p))) for p in paths]
    frame, report = clean(pd.concat(parts, ignore_index=True))
    frame = mask_frame(frame, text_columns=["description"], pii_columns=PII)
    frame = features(frame)
    frame["description"] = frame["description"].astype(str)
    frame["channel"] = frame["channel"].astype(str)
    frame["department"] = frame["department"].astype(str)
    return frame.reset_index(drop=True), report
