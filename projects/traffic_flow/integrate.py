"""Join sensor counts with the weather feed, clean them, and build next-hour forecasting rows.

Sources: one or more sensor CSVs (``sensor_id, timestamp, vehicle_count``,
local time) and one weather JSON (Unix seconds in UTC, Fahrenheit, inches);
see :mod:`projects.traffic_flow.generator` for both formats.

Cleaning, in order (each count lands in ``Dataset.report``):

1. unparseable timestamps and non-numeric or negative counts become missing
   (``bad_timestamps_dropped``, ``bad_counts``);
2. a reading sent twice for the same sensor and hour keeps the first
   (``duplicates_dropped``);
3. every sensor is put on a complete hourly grid; hours without a row become
   missing readings (``missing_hours_added``; ``missing_readings`` counts all
   missing values after this step);
4. a run of :data:`STUCK_HOURS` or more identical consecutive readings is a
   stuck sensor, and the whole run becomes missing (``stuck_readings_removed``);
5. gaps of at most :data:`MAX_GAP_HOURS` hours are filled by linear
   interpolation (``readings_interpolated``); longer gaps stay missing;
6. weather is converted to local time, Celsius and mm/h; missing hours get
   interpolated temperature and the previous hour's precipitation
   (``weather_hours_filled``).

Rows: for every sensor and hour ``t`` whose count was actually observed (not
interpolated), the features known one hour earlier: counts at ``t-1, t-2,
t-3, t-24, t-25, t-168, t-169``, the mean of the last 24 hours, hour of day
and day of week (sine/cosine), weekend and holiday flags, and the weather of
hour ``t`` (a forecast, in production). Rows whose target was interpolated
(``interpolated_targets_excluded``) or that lack any feature, e.g. the first
week of each sensor (``rows_without_history``), are dropped. Each row also says
where its sensor stands (``lat``, ``lon``: not features; :func:`sensor_locations`),
so charts and the map can show errors by place.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from civicml.errors import InvalidInput, NotFound
from projects.traffic_flow.generator import HOLIDAYS, LOCATIONS, UTC_OFFSET_HOURS

STUCK_HOURS = 4
MAX_GAP_HOURS = 3
COUNT_FEATURES = ("lag_1", "lag_2", "lag_3", "lag_24", "lag_25", "lag_168", "lag_169", "mean_24")
CONTEXT_FEATURES = ("hour_sin", "hour_cos", "dow_sin", "dow_cos", "weekend", "holiday", "temp_c", "precip_mm",
                    "snow")
FEATURES = COUNT_FEATURES + CONTEXT_FEATURES
TARGET = "vehicle_count"
_LAGS = (1, 2, 3, 24, 25, 168, 169)


def _read_sensors(paths: list[Path], report: dict) -> pd.DataFrame:
    frames = []
    for path in paths:
        try:
            frame = pd.read_csv(path, dtype={"sensor_id": str, "timestamp": str, "vehicle_count": str})
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as bad:
            raise InvalidInput(f"{path}: not a readable sensor CSV ({bad})") from None
        missing = {"sensor_id", "timestamp", "vehicle_count"} - set(frame.columns)
        if missing:
            raise InvalidInput(f"{path}: sensor CSV lacks column(s) {sorted(missing)}")
        located = ["lat", "lon"] if {"lat", "lon"} <= set(frame.columns) else []  # optional: where sensors stand
        frames.append(frame[["sensor_id", "timestamp", "vehicle_count", *located]])
    readings = pd.concat(frames, ignore_index=True)
    report["rows_read"] = len(readings)
    readings["timestamp"] = pd.to_datetime(readings["timestamp"], format="%Y-%m-%d %H:%M", errors="coerce")
    bad_time = readings["timestamp"].isna() | readings["sensor_id"].isna()
    report["bad_timestamps_dropped"] = int(bad_time.sum())
    readings = readings[~bad_time].copy()
    given = readings["vehicle_count"].notna() & (readings["vehicle_count"].str.strip() != "")
    counts = pd.to_numeric(readings["vehicle_count"], errors="coerce")
    bad = given & (counts.isna() | (counts < 0))
    report["bad_counts"] = int(bad.sum())
    readings["vehicle_count"] = counts.where(~bad).astype(float)
    before = len(readings)
    readings = readings.drop_duplicates(["sensor_id", "timestamp"], keep="first")
    report["duplicates_dropped"] = before - len(readings)
    if readings.empty:
        raise InvalidInput("the sensor CSV(s) hold no reading with a valid timestamp")
    return readings


def sensor_locations(readings: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """sensor_id -> (lat, lon): the CSV's own ``lat``/``lon`` columns where given, else the synthetic city's."""
    out = dict(LOCATIONS)
    if {"lat", "lon"} <= set(readings.columns):
        given = readings.assign(lat=pd.to_numeric(readings["lat"], errors="coerce"),
                                lon=pd.to_numeric(readings["lon"], errors="coerce")).dropna(subset=["lat", "lon"])
        for sensor_id, row in given.groupby("sensor_id")[["lat", "lon"]].first().iterrows():
            out[str(sensor_id)] = (float(row["lat"]), float(row["lon"]))
    return out


def _read_weather(path: Path) -> pd.DataFrame:
    try:
        doc = json.loads(Path(path).read_text())
        observations = pd.DataFrame(doc["observations"])
        units = doc.get("units", {})
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as bad:
        raise InvalidInput(f"{path}: not a weather feed with 'observations' ({bad})") from None
    needed = {"t", "temp_f", "precip_in"}
    if observations.empty or needed - set(observations.columns):
        raise InvalidInput(f"{path}: weather observations need fields {sorted(needed)}")
    if units.get("temperature", "degF") != "degF" or units.get("precipitation", "in/h") != "in/h":
        raise InvalidInput(f"{path}: expected units degF and in/h, got {units}")
    local = pd.to_datetime(observations["t"], unit="s") + pd.Timedelta(hours=UTC_OFFSET_HOURS)
    conditions = observations.get("conditions", pd.Series("", index=observations.index)).fillna("")
    out = pd.DataFrame({
        "temp_c": (pd.to_numeric(observations["temp_f"], errors="coerce") - 32.0) * 5.0 / 9.0,
        "precip_mm": pd.to_numeric(observations["precip_in"], errors="coerce") * 25.4,
        "snow": (conditions.str.lower() == "snow").astype(float),
    })
    out.index = local.dt.floor("h")
    return out[~out.index.duplicated(keep="first")].sort_index()


def _stuck_mask(values: pd.Series, min_run: int) -> pd.Series:
    """True where a value belongs to a run of ``min_run`` or more identical consecutive readings."""
    present = values.notna()
    run_id = (values.ne(values.shift()) | ~present).cumsum()
    run_length = values.groupby(run_id).transform("size")
    return present & (run_length >= min_run)


def _clean_sensor(series: pd.Series, grid: pd.DatetimeIndex, report: dict) -> pd.DataFrame:
    observed_rows = len(series)
    series = series.reindex(grid)
    report["missing_hours_added"] += len(grid) - observed_rows
    report["missing_readings"] += int(series.isna().sum())
    stuck = _stuck_mask(series, STUCK_HOURS)
    report["stuck_readings_removed"] += int(stuck.sum())
    series = series.mask(stuck)
    observed = series.notna()
    # interpolate only gaps of at most MAX_GAP_HOURS: fill, then undo fills inside longer gaps
    gap_id = observed.cumsum()
    gap_length = (~observed).groupby(gap_id).transform("sum")
    filled = series.interpolate(method="linear", limit_area="inside")
    filled = filled.where(observed | (gap_length <= MAX_GAP_HOURS))
    report["readings_interpolated"] += int((filled.notna() & ~observed).sum())
    return pd.DataFrame({"count": filled, "observed": observed})


def _rows(sensor_id: str, clean: pd.DataFrame) -> pd.DataFrame:
    count = clean["count"]
    index = clean.index
    rows = pd.DataFrame({"sensor_id": sensor_id, "timestamp": index}, index=index)
    for lag in _LAGS:
        rows[f"lag_{lag}"] = count.shift(lag)
    rows["mean_24"] = count.shift(1).rolling(24, min_periods=24).mean()
    hour, weekday = index.hour.to_numpy(), index.weekday.to_numpy()
    rows["hour_sin"], rows["hour_cos"] = np.sin(2 * np.pi * hour / 24), np.cos(2 * np.pi * hour / 24)
    rows["dow_sin"], rows["dow_cos"] = np.sin(2 * np.pi * weekday / 7), np.cos(2 * np.pi * weekday / 7)
    rows["weekend"] = (weekday >= 5).astype(float)
    rows["holiday"] = np.isin(index.date, HOLIDAYS).astype(float)
    rows[TARGET] = count
    rows["observed"] = clean["observed"]
    return rows


def integrate_sources(paths: list[Path]) -> tuple[pd.DataFrame, dict]:
    paths = [Path(p) for p in paths]
    for path in paths:
        if not path.exists():
            raise NotFound(f"source file not found: {path}")
    sensor_files = [p for p in paths if p.suffix.lower() == ".csv"]
    weather_files = [p for p in paths if p.suffix.lower() == ".json"]
    if not sensor_files or len(weather_files) != 1:
        raise InvalidInput("traffic_flow needs sensor CSV file(s) and exactly one weather JSON file, got "
                           f"{[p.name for p in paths]}")
    report = {"missing_hours_added": 0, "missing_readings": 0, "stuck_readings_removed": 0,
              "readings_interpolated": 0}
    readings = _read_sensors(sensor_files, report)
    where = sensor_locations(readings)
    grid = pd.date_range(readings["timestamp"].min(), readings["timestamp"].max(), freq="h")
    parts = []
    for sensor_id, group in readings.groupby("sensor_id", sort=True):
        series = group.set_index("timestamp")["vehicle_count"].sort_index()
        parts.append(_rows(str(sensor_id), _clean_sensor(series, grid, report)))
    frame = pd.concat(parts, ignore_index=True)

    sky = _read_weather(weather_files[0]).reindex(grid)
    report["weather_hours_filled"] = int(sky["temp_c"].isna().sum())
    sky["temp_c"] = sky["temp_c"].interpolate(limit_direction="both")
    sky[["precip_mm", "snow"]] = sky[["precip_mm", "snow"]].ffill().fillna(0.0)
    if sky["temp_c"].isna().any():
        raise InvalidInput(f"{weather_files[0]}: no weather observation overlaps the sensor period")
    frame = frame.join(sky, on="timestamp")

    interpolated_target = frame[TARGET].notna() & ~frame["observed"]
    report["interpolated_targets_excluded"] = int(interpolated_target.sum())
    report["missing_targets_dropped"] = int(frame[TARGET].isna().sum())
    frame = frame[frame["observed"]]
    incomplete = frame[list(FEATURES)].isna().any(axis=1)
    report["rows_without_history"] = int(incomplete.sum())
    frame = frame[~incomplete].drop(columns="observed")
    if frame.empty:
        raise InvalidInput("no sensor hour has a week of history; traffic_flow needs at least 8 days of readings")
    frame[list(FEATURES) + [TARGET]] = frame[list(FEATURES) + [TARGET]].astype(float)
    frame["lat"] = frame["sensor_id"].map(lambda s: where.get(s, (np.nan, np.nan))[0]).astype(float)  # not features:
    frame["lon"] = frame["sensor_id"].map(lambda s: where.get(s, (np.nan, np.nan))[1]).astype(float)  # the map's
    report["rows"] = len(frame)
    report["sensors"] = int(frame["sensor_id"].nunique())
    return frame.sort_values(["timestamp", "sensor_id"]).reset_index(drop=True), report
