"""A seeded year of 311 traffic for Riverton: what a live router sees, week after week.

The same city as :mod:`projects.service_requests.generator` (its districts, priors, phrasings, streets and
callers), with time in it:

1. **Weekly cycle.** Fewer requests at weekends (Saturday 0.7, Sunday 0.6 of a Monday); noise complaints
   at night, more on Friday and Saturday nights; roads during commutes.
2. **Seasons.** Parks and noise rise in summer, roads (potholes after the thaw) and social services
   (the cold) in winter, water (storms) in spring and autumn: the department mix moves all year, which
   is what a monitor must *not* call drift.
3. **Holidays.** New Year's Day, Independence Day, Thanksgiving and Christmas: half the traffic, and
   fireworks-night noise on the 1st of January and the 4th of July.
4. **A new kind of complaint.** From week ``new_kind_week`` on, in one district only
   (``new_kind_district``), rental e-scooters left on pavements: words no earlier request used, a
   ``new_kind_share`` of that district's traffic on top of the usual. Its department is ``roads``.
5. **Late labels.** A request's true department is known when its ticket closes: ``labelled_at`` is
   ``created_at`` plus one day plus an exponential delay (mean ``label_delay_days``); ``unlabelled_share``
   of tickets never close (``labelled_at`` is NaT).
6. **Personal data** as in the generator: every caller has a name, phone and e-mail, and about a quarter of
   descriptions carry some of it ("call me at ...", "my name is ...").

One row per request: ``created_at`` (America/New_York), the model's inputs (``description``, ``district``,
``channel``, ``hour``, ``weekday``), the caller (``name``, ``phone``, ``email``), the outcome
(``department``), ``labelled_at``, ``week`` (0-based), ``new_kind`` and ``holiday``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from projects.service_requests.generator import (DEPARTMENTS, DISTRICTS, FIRST_NAMES, LAST_NAMES, PII_PHRASES, SEEN,
                                                 STREETS, TIMEZONE, _phone, _typo)

NEW_KIND = ("Abandoned rental e-scooter blocking the sidewalk on {street}",
            "Pile of shared e-scooters dumped at the corner of {street}",
            "Rental scooters left lying across the bike lane on {street}",
            "E-scooter parking zone overflowing onto {street}, scooters everywhere",
            "Broken electric scooter chained to the railing at {street} for weeks")
NEW_KIND_DEPARTMENT = "roads"
WEEKDAY_VOLUME = (1.15, 1.1, 1.05, 1.05, 1.0, 0.7, 0.6)
CHANNELS = ("phone", "web", "app")
CHANNEL_SHARE = (0.45, 0.33, 0.22)


@dataclass(frozen=True)
class SeasonSettings:
    weeks: int = 52
    per_week: int = 480  # requests in an ordinary week, all districts together
    start: str = "2026-01-05"  # a Monday
    new_kind_week: int | None = 30  # None: a year without the new complaint
    new_kind_district: str = "Riverside"
    new_kind_share: float = 0.3
    label_delay_days: float = 4.0
    unlabelled_share: float = 0.1


def holidays(year: int) -> list[pd.Timestamp]:
    """New Year's Day, Independence Day, Thanksgiving (4th Thursday of November), Christmas."""
    november = pd.date_range(f"{year}-11-01", f"{year}-11-30", freq="D")
    thanksgiving = [d for d in november if d.dayofweek == 3][3]
    return [pd.Timestamp(f"{year}-01-01"), pd.Timestamp(f"{year}-07-04"), thanksgiving,
            pd.Timestamp(f"{year}-12-25")]


def _season_weights(day: pd.Timestamp) -> np.ndarray:
    """Multipliers of the department priors on ``day`` (DEPARTMENTS order)."""
    phase = 2 * np.pi * (day.dayofyear - 196) / 365.25  # 0 in mid-July
    summer = np.cos(phase)  # +1 mid-July, -1 mid-January
    storms = -np.cos(2 * phase)  # +1 mid-April and mid-October
    return np.array([1 + 0.35 * max(-summer, 0) + 0.1,  # roads: winter potholes
                     1 + 0.15 * summer,  # sanitation: summer smells
                     1 + 0.6 * max(summer, 0),  # parks
                     1 + 0.3 * max(storms, 0),  # water: spring and autumn storms
                     1 + 0.5 * max(summer, 0),  # noise
                     1 + 0.4 * max(-summer, 0)])  # social services: the cold


def generate_season(seed: int, settings: SeasonSettings | None = None) -> pd.DataFrame:
    """A year (``settings.weeks`` weeks) of requests; see the module's docstring."""
    s = settings or SeasonSettings()
    names = [d.name for d in DISTRICTS]
    if s.new_kind_district not in names:
        raise ValueError(f"unknown district {s.new_kind_district!r}")
    rng = np.random.default_rng(seed)
    start = pd.Timestamp(s.start)
    days = pd.date_range(start, periods=7 * s.weeks, freq="D")
    holiday_days = {h.date() for y in {d.year for d in days} for h in holidays(y)}
    is_holiday = np.array([d.date() in holiday_days for d in days])
    weekday = days.dayofweek.to_numpy()
    volume = s.per_week / sum(WEEKDAY_VOLUME) * np.array(WEEKDAY_VOLUME)[weekday] * np.where(is_holiday, 0.5, 1.0)
    ordinary = rng.poisson(volume)
    extra = np.zeros(len(days), dtype=int)
    if s.new_kind_week is not None:
        late = np.arange(len(days)) // 7 >= s.new_kind_week
        extra[late] = rng.poisson(volume[late] / len(DISTRICTS) * s.new_kind_share / (1 - s.new_kind_share))
    day = np.concatenate([np.repeat(np.arange(len(days)), ordinary), np.repeat(np.arange(len(days)), extra)])
    new_kind = np.concatenate([np.zeros(ordinary.sum(), bool), np.ones(extra.sum(), bool)])
    n = len(day)
    district = np.where(new_kind, names.index(s.new_kind_district), rng.integers(len(DISTRICTS), size=n))
    hour = rng.choice(24, p=_HOURS, size=n)
    minute = rng.integers(60, size=n)
    department = _departments(rng, days, day, district, hour, weekday[day], is_holiday[day])
    department = np.where(new_kind, DEPARTMENTS.index(NEW_KIND_DEPARTMENT), department)
    local = pd.DatetimeIndex(start + pd.to_timedelta(day * 86400 + hour * 3600 + minute * 60, unit="s"))
    created = local.tz_localize(TIMEZONE, nonexistent="shift_forward", ambiguous=np.zeros(n, bool))
    people = _callers(rng, n)
    frame = pd.DataFrame({
        "created_at": created, "description": _texts(rng, department, new_kind, people),
        "district": np.array(names)[district], "channel": np.array(CHANNELS)[rng.choice(3, p=CHANNEL_SHARE, size=n)],
        "hour": created.hour.astype("int64"), "weekday": created.dayofweek.astype("int64"),
        "name": people["name"], "phone": people["phone"], "email": people["email"],
        "department": np.array(DEPARTMENTS)[department], "week": day // 7, "new_kind": new_kind,
        "holiday": is_holiday[day]})
    frame = frame.sort_values("created_at", kind="stable").reset_index(drop=True)
    delay = pd.to_timedelta(1 + rng.exponential(s.label_delay_days, n), unit="D")
    closed = rng.random(n) >= s.unlabelled_share
    frame["labelled_at"] = (frame["created_at"] + delay).where(closed)
    return frame


def _departments(rng, days, day, district, hour, weekday, holiday) -> np.ndarray:
    season = np.stack([_season_weights(d) for d in days])
    priors = np.array([d.weights for d in DISTRICTS], dtype=float)
    weights = priors[district] * season[day]
    night = (hour >= 22) | (hour < 5)
    weights[:, DEPARTMENTS.index("noise")] *= np.where(night, np.where((weekday >= 4) & (weekday <= 5) | holiday, 6, 4), 1)
    commute = np.isin(hour, (7, 8, 9, 16, 17, 18)) & (weekday < 5)
    weights[:, DEPARTMENTS.index("roads")] *= np.where(commute, 2, 1)
    cumulative = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)
    return np.minimum((rng.random(len(day))[:, None] > cumulative).sum(axis=1), len(DEPARTMENTS) - 1)


def _callers(rng, n: int) -> dict[str, list[str]]:
    first = np.array(FIRST_NAMES)[rng.integers(len(FIRST_NAMES), size=n)]
    last = np.array(LAST_NAMES)[rng.integers(len(LAST_NAMES), size=n)]
    number = rng.integers(1, 99, size=n)
    return {"name": [f"{a} {b}" for a, b in zip(first, last)], "phone": [_phone(rng) for _ in range(n)],
            "email": [f"{a.lower()}.{b.lower()}{k}@mail.example.org" for a, b, k in zip(first, last, number)]}


def _texts(rng, department, new_kind, people) -> list[str]:
    n = len(department)
    pick, s1 = rng.random(n), rng.integers(len(STREETS), size=n)
    s2 = (s1 + rng.integers(1, len(STREETS), size=n)) % len(STREETS)
    typo, pii, phrase = rng.random(n) < 0.08, rng.random(n) < 0.25, rng.integers(len(PII_PHRASES), size=n)
    out = []
    for i in range(n):
        pool = NEW_KIND if new_kind[i] else SEEN[DEPARTMENTS[department[i]]]
        text = pool[int(pick[i] * len(pool))].format(street=STREETS[s1[i]], street2=STREETS[s2[i]])
        if typo[i]:
            text = _typo(text, rng)
        if pii[i]:
            text += ". " + PII_PHRASES[phrase[i]].format(name=people["name"][i], phone=people["phone"][i],
                                                        email=people["email"][i])
        out.append(text)
    return out


_HOUR_WEIGHTS = np.array([2, 1.5, 1, 1, 1, 1.5, 3, 5, 7, 8, 8, 8, 8, 8, 8, 8, 8, 7, 6, 5, 4, 4, 3, 2.5])
_HOURS = _HOUR_WEIGHTS / _HOUR_WEIGHTS.sum()


def model_inputs(frame: pd.DataFrame) -> pd.DataFrame:
    """The columns a 311 router is asked with (its FEATURES), as serving receives them."""
    return frame[["description", "district", "channel", "hour", "weekday"]]
