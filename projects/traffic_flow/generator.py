"""A seeded synthetic road-sensor network and the weather feed of another department.

Two sources, written the way the two departments publish them:

``sensors.csv`` (Transport department)
    ``sensor_id, timestamp, vehicle_count``; one row per sensor and hour,
    (where each sensor stands is :data:`SENSORS`' ``lat``/``lon``; a CSV may also carry
    ``lat``/``lon`` columns, which the integration prefers),
    ``timestamp`` in city local standard time (UTC+01:00 all year, no DST) as
    ``YYYY-MM-DD HH:MM``; an empty ``vehicle_count`` is a failed reading.

``weather.json`` (Environment department)
    ``{"provider", "station", "units": {"temperature": "degF", "precipitation":
    "in/h"}, "observations": [{"t": <Unix seconds, UTC>, "temp_f", "precip_in",
    "conditions"}]}``; about 1 % of the hours are missing.

How the counts are made (hour ``t``, sensor ``s``)::

    mean = base_s * profile_s(hour, weekday, holiday) * weather(t) * drift_s(t) * incident_s(t)
    count = Poisson(mean)

* ``profile``: commuter roads have a morning peak (08:00) and a wider evening
  peak (17:30) on working days; leisure roads have a broad midday hump that is
  highest at weekends. Weekends and holidays (:data:`HOLIDAYS`, the city
  calendar) use the weekend shape; Fridays are 6 % busier.
* ``weather``: rain lowers traffic by 5 % per mm/h (at most 25 %), snow by
  30 %; temperature follows the season, the day and a slow AR(1) anomaly, and
  rain comes in Markov-chain spells.
* ``drift``: a per-sensor AR(1) in log space (hourly phi 0.9, sigma 0.04),
  the persistence a forecaster can use and a seasonal copy cannot.
* ``incident``: about one per 300 hours and sensor, 1-4 hours at 40-70 %.

Then what goes wrong with real sensors: 1.5 % of readings empty, outages of
2-10 hours with no rows at all (about one per 500 hours), stuck sensors that
repeat their last value for 5-20 hours (about one per 400 hours), and 0.3 %
of rows sent twice.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

START = pd.Timestamp("2024-01-01 00:00")  # a Monday, city local time
UTC_OFFSET_HOURS = 1  # sensor timestamps are local standard time, UTC+01:00
HOLIDAYS = tuple(dt.date.fromisoformat(d) for d in (
    "2024-01-01", "2024-01-15", "2024-02-19", "2024-03-29", "2024-04-01", "2024-05-01", "2024-05-09",
    "2024-05-20", "2024-05-27", "2024-07-04", "2024-09-02", "2024-10-14", "2024-11-11", "2024-11-28",
    "2024-12-24", "2024-12-25", "2024-12-26", "2024-12-31",
    "2025-01-01", "2025-01-20", "2025-02-17", "2025-04-18", "2025-04-21", "2025-05-01", "2025-05-26",
    "2025-07-04", "2025-09-01", "2025-11-27", "2025-12-25", "2025-12-26",
))


@dataclass(frozen=True)
class Sensor:
    sensor_id: str
    road: str
    base: float  # vehicles per hour at the profile's peak scale
    kind: str  # "commuter" or "leisure"
    lat: float | None = None  # where it stands, in the synthetic city of the 311 requests (degrees)
    lon: float | None = None


SENSORS = (
    Sensor("S01", "Main St northbound", 900.0, "commuter", 40.735, -73.935),  # Midtown
    Sensor("S02", "Harbor Rd", 600.0, "commuter", 40.645, -74.005),  # Harbor
    Sensor("S03", "Park Ave", 350.0, "leisure", 40.755, -73.895),  # Greenfield
    Sensor("S04", "Ring Rd east", 1200.0, "commuter", 40.690, -73.876),  # Eastgate
    Sensor("S05", "Old Town Gate", 250.0, "leisure", 40.703, -73.962),  # Old Town
)
LOCATIONS = {s.sensor_id: (s.lat, s.lon) for s in SENSORS if s.lat is not None}  # sensor_id -> (lat, lon)
MIN_HOURS = 24 * 7 * 3


def _bump(hour, centre, width):
    return np.exp(-0.5 * ((hour - centre) / width) ** 2)


def profile(kind: str, hour: np.ndarray, weekday: np.ndarray, holiday: np.ndarray) -> np.ndarray:
    """Relative traffic by hour of day for a road kind; weekends and holidays take the weekend shape."""
    off = (weekday >= 5) | holiday
    day = 1.0 / (1.0 + np.exp(-(hour - 6.5) * 1.5)) / (1.0 + np.exp((hour - 21.0) * 1.2))
    if kind == "commuter":
        work = 0.06 + 0.9 * _bump(hour, 8.0, 1.1) + 0.8 * _bump(hour, 17.5, 1.5) + 0.45 * day
        rest = 0.06 + 0.55 * _bump(hour, 13.5, 3.2) + 0.1 * day
    else:
        work = 0.06 + 0.3 * _bump(hour, 8.0, 1.2) + 0.35 * _bump(hour, 17.5, 1.6) + 0.5 * day
        rest = 0.08 + 0.95 * _bump(hour, 14.0, 3.5) + 0.15 * day
    out = np.where(off, rest, work)
    return out * np.where(weekday == 4, 1.06, 1.0)


def weather(hours: pd.DatetimeIndex, rng: np.random.Generator) -> pd.DataFrame:
    """Hourly city weather in local time: ``temp_c``, ``precip_mm``, ``snow``."""
    n = len(hours)
    doy = hours.dayofyear.to_numpy()
    hod = hours.hour.to_numpy()
    anomaly = np.zeros(n)
    raining = np.zeros(n, dtype=bool)
    for i in range(1, n):
        anomaly[i] = 0.97 * anomaly[i - 1] + rng.normal(0, 0.6)
        raining[i] = rng.random() < (0.85 if raining[i - 1] else 0.03)
    temp = 9.0 - 9.0 * np.cos(2 * np.pi * (doy - 15) / 365.0) + 4.0 * np.sin(2 * np.pi * (hod - 9) / 24.0) + anomaly
    precip = np.where(raining, rng.gamma(1.5, 1.2, n), 0.0)
    return pd.DataFrame({"temp_c": temp, "precip_mm": precip, "snow": raining & (temp < 0.5)}, index=hours)


def simulate(n: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(readings as the sensors send them, true hourly weather) for about ``n`` sensor-hours."""
    rng = np.random.default_rng(seed)
    hours = pd.date_range(START, periods=max(int(n) // len(SENSORS), MIN_HOURS), freq="h")
    sky = weather(hours, rng)
    holiday = np.isin(hours.date, HOLIDAYS)
    hour, weekday = hours.hour.to_numpy(), hours.weekday.to_numpy()
    effect = np.where(sky["snow"], 0.7, 1.0 - np.minimum(0.05 * sky["precip_mm"].to_numpy(), 0.25))
    frames = []
    for sensor in SENSORS:
        drift = np.zeros(len(hours))
        incident = np.ones(len(hours))
        for i in range(1, len(hours)):
            drift[i] = 0.9 * drift[i - 1] + rng.normal(0, 0.04)
            if rng.random() < 1 / 300:
                incident[i:i + int(rng.integers(1, 5))] = rng.uniform(0.4, 0.7)
        mean = sensor.base * profile(sensor.kind, hour, weekday, holiday) * effect * np.exp(drift) * incident
        counts = rng.poisson(mean).astype(float)
        counts[rng.random(len(hours)) < 0.015] = np.nan
        keep = np.ones(len(hours), dtype=bool)
        for i in np.flatnonzero(rng.random(len(hours)) < 1 / 500):
            keep[i:i + int(rng.integers(2, 11))] = False
        for i in np.flatnonzero(rng.random(len(hours)) < 1 / 400):
            if i > 0 and not np.isnan(counts[i - 1]):
                counts[i:i + int(rng.integers(5, 21))] = counts[i - 1]
        frames.append(pd.DataFrame({"sensor_id": sensor.sensor_id, "timestamp": hours[keep],
                                    "vehicle_count": counts[keep]}))
    readings = pd.concat(frames, ignore_index=True)
    twice = readings.sample(frac=0.003, random_state=int(rng.integers(2 ** 31)))
    readings = pd.concat([readings, twice]).sort_values(["timestamp", "sensor_id"], kind="stable")
    return readings.reset_index(drop=True), sky


def write_sources(folder: Path, n: int, seed: int) -> list[Path]:
    """Write ``sensors.csv`` and ``weather.json`` into ``folder``; return their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    readings, sky = simulate(n, seed)
    rng = np.random.default_rng([seed, 1])
    sensors_path = folder / "sensors.csv"
    out = readings.assign(timestamp=readings["timestamp"].dt.strftime("%Y-%m-%d %H:%M"),
                          vehicle_count=readings["vehicle_count"].map(lambda v: "" if np.isnan(v) else str(int(v))))
    out.to_csv(sensors_path, index=False)
    kept = sky[rng.random(len(sky)) >= 0.01]
    utc = kept.index - pd.Timedelta(hours=UTC_OFFSET_HOURS)
    observations = [
        {"t": int(ts.value // 10 ** 9), "temp_f": round(float(row.temp_c) * 9 / 5 + 32, 1),
         "precip_in": round(float(row.precip_mm) / 25.4, 3),
         "conditions": "snow" if row.snow else ("rain" if row.precip_mm > 0 else "clear")}
        for ts, row in zip(utc, kept.itertuples())
    ]
    weather_path = folder / "weather.json"
    weather_path.write_text(json.dumps({"provider": "City Environment Department", "station": "CENTRAL",
                                        "units": {"temperature": "degF", "precipitation": "in/h"},
                                        "observations": observations}))
    return [sensors_path, weather_path]
