"""A seeded year of road-sensor traffic, with a road closure: what a live flow model sees, week after week.

The same network as :mod:`projects.traffic_flow.generator` (its :data:`SENSORS`, hourly ``profile`` and
``weather``, the city's :data:`HOLIDAYS`), with time in it:

1. **Weekly and daily cycle.** Commuter roads peak at 08:00 and 17:30 on working days, leisure roads at
   midday and at weekends; holidays take the weekend shape; Fridays are 6 % busier (the generator's
   ``profile``).
2. **Weather and persistence.** Rain and snow lower traffic (the generator's ``weather``, with its seasons);
   each sensor drifts slowly (AR(1) in log space), as in the generator.
3. **A road closure.** From week ``closure_week`` on, the road of ``closed_sensor`` is closed: its flow falls
   to ``closed_share`` of the usual (site traffic only), and ``diverted_share`` of what it would have carried
   drives past ``detour_sensor`` instead, on top of that sensor's own traffic.

No failed readings, outages or duplicates here (the generator has those): this is what a monitor is given once
readings are integrated. One row per sensor and hour: ``time`` (city local time), ``sensor_id``,
``vehicle_count``, ``hour``, ``weekday``, ``holiday``, ``week`` (0-based) and ``closed`` (the row is the closed
sensor's, during the closure).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from projects.traffic_flow.generator import HOLIDAYS, SENSORS, START, profile, weather


@dataclass(frozen=True)
class TrafficSeasonSettings:
    weeks: int = 52
    start: str = str(START.date())  # a Monday; the generator's holidays cover 2024 and 2025
    closure_week: int | None = 30  # None: a year without the closure
    closed_sensor: str = "S03"  # Park Ave
    detour_sensor: str = "S05"  # Old Town Gate, the nearest leisure road
    closed_share: float = 0.03  # of the usual flow, still counted on the closed road
    diverted_share: float = 0.6  # of the closed road's usual flow, now past the detour sensor


def generate_traffic_season(seed: int, settings: TrafficSeasonSettings | None = None) -> pd.DataFrame:
    """``weeks`` of hourly counts for every sensor, seeded; the closure as ``settings`` say (see the module)."""
    settings = settings or TrafficSeasonSettings()
    known = {s.sensor_id for s in SENSORS}
    for sensor in (settings.closed_sensor, settings.detour_sensor):
        if sensor not in known:
            raise ValueError(f"unknown sensor '{sensor}' (known: {', '.join(sorted(known))})")
    rng = np.random.default_rng(seed)
    hours = pd.date_range(pd.Timestamp(settings.start), periods=settings.weeks * 7 * 24, freq="h")
    sky = weather(hours, rng)
    holiday = np.isin(hours.date, HOLIDAYS)
    hour, weekday = hours.hour.to_numpy(), hours.weekday.to_numpy()
    week = np.arange(len(hours)) // (7 * 24)
    effect = np.where(sky["snow"], 0.7, 1.0 - np.minimum(0.05 * sky["precip_mm"].to_numpy(), 0.25))
    means = {}
    for sensor in SENSORS:
        drift = lfilter([1.0], [1.0, -0.9], rng.normal(0, 0.04, len(hours)))  # AR(1), as the generator's
        means[sensor.sensor_id] = sensor.base * profile(sensor.kind, hour, weekday, holiday) * effect * np.exp(drift)
    closed = np.zeros(len(hours), dtype=bool) if settings.closure_week is None else week >= settings.closure_week
    usual = means[settings.closed_sensor].copy()
    means[settings.closed_sensor] = np.where(closed, usual * settings.closed_share, usual)
    means[settings.detour_sensor] = means[settings.detour_sensor] + np.where(closed, usual * settings.diverted_share, 0)
    frames = [pd.DataFrame({"time": hours, "sensor_id": sensor_id, "vehicle_count": rng.poisson(mean).astype(float),
                            "hour": hour, "weekday": weekday, "holiday": holiday, "week": week,
                            "closed": closed & (sensor_id == settings.closed_sensor)})
              for sensor_id, mean in means.items()]
    return pd.concat(frames, ignore_index=True).sort_values(["time", "sensor_id"], kind="stable").reset_index(drop=True)


__all__ = ["TrafficSeasonSettings", "generate_traffic_season"]
