"""Small, realistic department exports for the tabular use-case tests and the benchmark (made up, seeded).

* ``inspections``: a health department's inspections (codes, free-text notes with the odd phone number
  or e-mail, the inspector's name) and a 311 complaints export from another department, joined on the site
  and on the most recent complaint before the inspection (``merge_asof``). Target: ``violation`` (yes/no).
* ``hourly_counts``: hourly ridership counts per station with the temperature in Fahrenheit; regression.
* ``bus_trips``, ``permit_days``: exports shaped like real public files (row numbers, bare years, flags
  spelled 0/1, TRUE/FALSE, Yes/no, t/f, y/n, a 92/8 class split, missing targets).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

CUISINES = ["pizza", "bakery", "thai", "mexican", "grocery", "cafe", "burgers", "sushi"]
GOOD = ["kitchen clean, staff trained", "all surfaces sanitized and logs complete", "no issues observed today",
        "hand washing station stocked", "cold storage at correct temperature"]
BAD = ["rodent droppings found near storage", "cooler temperature above limit", "no hot water at hand sink",
       "raw chicken stored above produce", "cockroaches seen behind the fryer"]
FIRST = ["Maria", "James", "Aisha", "Chen", "Olga", "Pedro", "Fatima", "Liam"]
LAST = ["Garcia", "Smith", "Khan", "Wong", "Petrova", "Silva", "Haddad", "Murphy"]
STREETS = ["Main St", "Oak Avenue", "Pine Rd", "Lake Blvd", "Elm Street"]


def inspections(folder: Path, n: int = 600, seed: int = 0) -> dict[str, Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    sites = np.arange(1000, 1000 + max(20, n // 6))
    start = pd.Timestamp("2025-01-06 08:00")
    when = start + pd.to_timedelta(np.sort(rng.uniform(0, 330, n)), unit="D")
    when = when.round("15min")
    site = rng.choice(sites, n)
    risk = rng.choice([1, 2, 3], n, p=[0.3, 0.4, 0.3])
    cuisine = rng.choice(CUISINES, n)
    complaints_n = max(40, n // 2)
    c_site = rng.choice(sites, complaints_n)
    c_when = start - pd.Timedelta(days=20) + pd.to_timedelta(rng.uniform(0, 350, complaints_n), unit="D")
    c_count = rng.poisson(2.0, complaints_n)
    complaints = pd.DataFrame({
        "SiteID": c_site.astype(str), "received": c_when.strftime("%m/%d/%Y %H:%M"),
        "complaints_30d": c_count, "complaint_type": rng.choice(["odor", "pests", "illness", "dirty"], complaints_n),
        "complainant_email": [f"{rng.choice(FIRST).lower()}.{rng.choice(LAST).lower()}{i}@mail.example.org"
                              for i in range(complaints_n)],
    })
    # the latest complaint at or before each inspection (within 60 days) drives the label too
    left = pd.DataFrame({"site": site.astype(str), "t": when.astype("datetime64[ns]")}).reset_index().sort_values("t")
    right = pd.DataFrame({"site": c_site.astype(str),
                          "t": pd.to_datetime(complaints["received"]).astype("datetime64[ns]"),
                          "c": c_count}).sort_values("t")
    joined = pd.merge_asof(left, right, on="t", by="site", tolerance=pd.Timedelta("60D")).sort_values("index")
    pressure = joined["c"].fillna(0).to_numpy()
    logit = -1.6 + 0.9 * (risk == 1) - 0.6 * (risk == 3) + 0.45 * pressure + rng.normal(0, 0.7, n)
    violation = logit > 0
    notes = []
    for i in range(n):
        text = str(rng.choice(BAD if violation[i] and rng.random() < 0.8 else GOOD))
        if rng.random() < 0.1:
            text += f"; owner asked to call back at 555-{rng.integers(100, 999)}-{rng.integers(1000, 9999)}"
        notes.append(text)
    frame = pd.DataFrame({
        "inspection_id": np.arange(1, n + 1), "site_id": site, "insp_date": when.strftime("%Y-%m-%d %H:%M"),
        "inspector": [f"{rng.choice(FIRST)} {rng.choice(LAST)}" for _ in range(n)],
        "risk_code": risk, "cuisine": cuisine, "notes": notes, "violation": np.where(violation, "yes", "no"),
    })
    paths = {"inspections": folder / "inspections.csv", "complaints": folder / "complaints.csv"}
    frame.to_csv(paths["inspections"], index=False)
    complaints.to_csv(paths["complaints"], index=False)
    return paths


INSPECTIONS_YAML = """\
name: {name}
description: Predict which restaurant inspections find a violation.
task: classification
target: violation
sources:
  - path: inspections.csv
    rename: {{insp_date: inspected_at}}
    dates: [inspected_at]
    timezone: {{inspected_at: America/Chicago}}
    categories: {{risk_code: {{"1": high, "2": medium, "3": low}}}}
  - path: complaints.csv
    rename: {{SiteID: site_id}}
    dates: [received]
    timezone: {{received: America/Chicago}}
    join: {{how: left, on: [site_id], time: {{left: inspected_at, right: received, tolerance: 60d}}}}
features: {{all_but: [inspection_id, received]}}
types: {{notes: text, cuisine: category, risk_code: category, complaint_type: category}}
metric: macro_f1
privacy:
  drop: [inspector, complainant_email]
  mask: [notes]
holdout: {{split: time, column: inspected_at, fraction: 0.2}}
families: [{families}]
policy: {{min_value: 0.5, thresholds: {{accuracy: 0.5}}}}
"""


def hourly_counts(folder: Path, days: int = 60, stations: int = 4, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    hours = pd.date_range("2025-05-01", periods=days * 24, freq="h")
    rows = []
    for s in range(stations):
        base = 20 + 15 * s
        temp_f = 60 + 15 * np.sin(np.arange(len(hours)) / 24 * 2 * np.pi / 7) + rng.normal(0, 4, len(hours))
        hour = hours.hour.to_numpy()
        peak = np.exp(-((hour - 8) ** 2) / 4) + np.exp(-((hour - 17) ** 2) / 5)
        weekend = (hours.day_of_week >= 5).astype(float)
        count = base * (0.2 + 1.5 * peak * (1 - 0.6 * weekend)) + 0.3 * (temp_f - 60) + rng.normal(0, 3, len(hours))
        rows.append(pd.DataFrame({"hour_start": hours.strftime("%Y-%m-%dT%H:%M:%S"),
                                  "station": f"ST-{s:02d}", "temp_f": temp_f.round(1),
                                  "riders": np.maximum(0, count).round()}))
    path = folder / "ridership.parquet"
    pd.concat(rows, ignore_index=True).to_parquet(path, index=False)
    return path


HOURLY_YAML = """\
name: {name}
task: regression
target: riders
sources:
  - path: ridership.parquet
    dates: [hour_start]
    units: {{temp_f: {{to: temp_c, factor: 0.5556, offset: -17.78}}}}
types: {{station: category}}
metric: mae
holdout: {{split: random, fraction: 0.2, seed: 3}}
families: [{families}]
search: ["hist_gradient_boosting.max_iter=50:150:step=50"]
policy: {{max_regression: 0.5}}
"""


def bus_trips(folder: Path, n: int = 600, seed: int = 0) -> Path:
    """A transit agency's trip log as R's ``write.csv`` writes it: a ``rownames`` column (1..n), a bare ``Year``
    (2008-2019), flags as ``Weekend`` TRUE/FALSE, ``Holiday`` 0/1 and ``Rain`` Yes/no (mixed case), the hour,
    the distance; target ``Delayed`` ("late"/"on time", about 92/8), a few rows without it."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    year = np.sort(rng.integers(2008, 2020, n))
    weekend = rng.random(n) < 2 / 7
    holiday = (rng.random(n) < 0.05).astype(int)
    rain = rng.random(n) < 0.3
    hour = rng.integers(5, 23, n)
    distance = rng.gamma(3.0, 2.5, n).round(2)
    logit = -3.4 + 1.6 * rain + 0.15 * distance - 0.9 * weekend + 0.8 * ((hour >= 7) & (hour <= 9)) \
        + rng.normal(0, 0.5, n)
    delayed = np.where(logit > 0, "late", "on time").astype(object)
    delayed[rng.choice(n, 8, replace=False)] = None  # missing targets: dropped by the data step
    frame = pd.DataFrame({
        "rownames": np.arange(1, n + 1), "Year": year, "Weekend": np.where(weekend, "TRUE", "FALSE"),
        "Holiday": holiday, "Rain": np.where(rain, rng.choice(["Yes", "yes"], n), rng.choice(["No", "no"], n)),
        "hour": hour, "distance_km": distance, "route": rng.choice(["R1", "R2", "R7", "X4"], n),
        "Delayed": delayed})
    path = folder / "bus_trips.csv"
    frame.to_csv(path, index=False)
    return path


def permit_days(folder: Path, n: int = 500, seed: int = 0) -> Path:
    """A building department's permits as pandas writes them with its index: ``Unnamed: 0``, a ``permit_id``
    code, an ``applied`` date, flags ``Express`` (t/f), ``Corner`` (True/False) and ``Solar`` (y/n), the area
    and the zone; target ``days_to_issue`` (regression), a few rows without it."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    applied = pd.Timestamp("2023-01-02") + pd.to_timedelta(np.sort(rng.uniform(0, 700, n)), unit="D")
    express = rng.random(n) < 0.25
    corner = rng.random(n) < 0.2
    solar = rng.random(n) < 0.3
    area = rng.gamma(4.0, 40.0, n).round(1)
    zone = rng.choice(["R1", "R2", "C1", "M1"], n)
    days = 30 + 0.08 * area - 18 * express + 6 * corner + 4 * solar + 10 * (zone == "M1") + rng.normal(0, 4, n)
    days = days.round().astype(object)
    days[rng.choice(n, 6, replace=False)] = None
    frame = pd.DataFrame({
        "permit_id": [f"BP-{100000 + i}" for i in rng.permutation(n)], "applied": applied.strftime("%Y-%m-%d"),
        "Express": np.where(express, "t", "f"), "Corner": corner, "Solar": np.where(solar, "y", "n"),
        "area_m2": area, "zone": zone, "days_to_issue": days})
    path = folder / "permits.csv"
    frame.to_csv(path)  # the index becomes "Unnamed: 0" when read back
    return path
