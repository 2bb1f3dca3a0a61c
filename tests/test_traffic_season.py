"""A road closure in the simulated traffic year, and monitoring's drift detection finding it: the closed
sensor is flagged in the closure's first or second week, the sensors the closure does not touch never."""

from __future__ import annotations

import pandas as pd
import pytest

from monitoring.drift import Reference, detect_drift, epoch_seconds
from projects.traffic_flow.season import TrafficSeasonSettings, generate_traffic_season

WEEKS, CLOSURE = 12, 8


def _rows(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"vehicle_count": frame["vehicle_count"], "time": epoch_seconds(frame["time"]).astype(float),
                         "sensor_id": frame["sensor_id"]})


def test_the_season_is_seeded_and_the_closure_moves_flow_to_the_detour():
    settings = TrafficSeasonSettings(weeks=WEEKS, closure_week=CLOSURE)
    year = generate_traffic_season(7, settings)
    assert year.equals(generate_traffic_season(7, settings))
    assert len(year) == WEEKS * 7 * 24 * 5 and year["time"].is_monotonic_increasing
    mean = year.groupby(["sensor_id", year["week"] >= CLOSURE])["vehicle_count"].mean()
    assert mean["S03", True] < 0.1 * mean["S03", False]  # closed: site traffic only
    assert mean["S05", True] > 1.5 * mean["S05", False]  # the detour carries what Park Ave did
    assert 0.8 < mean["S01", True] / mean["S01", False] < 1.25  # untouched
    assert year.loc[year["closed"], "sensor_id"].unique().tolist() == ["S03"]
    with pytest.raises(ValueError, match="unknown sensor 'S99'"):
        generate_traffic_season(7, TrafficSeasonSettings(weeks=1, closed_sensor="S99"))


def test_drift_by_sensor_flags_the_closed_sensor_and_not_the_unchanged_ones():
    """Last year's weeks (no closure, another draw) are the reference, calibrated on their own history."""
    reference = _rows(generate_traffic_season(10, TrafficSeasonSettings(weeks=WEEKS, closure_week=None)))
    live = _rows(generate_traffic_season(11, TrafficSeasonSettings(weeks=WEEKS, closure_week=CLOSURE)))
    found = detect_drift(live.rename(columns={"sensor_id": "group"}),
                         Reference(reference, time="time", group="sensor_id", name="last year"),
                         window="7d", columns=["vehicle_count"])
    found["week"] = found["window"].rank(method="dense").astype(int) - 1
    assert found["week"].max() == WEEKS - 1 and found["calibrated"].all()
    drifted = found[found["status"] == "drifted"]
    closed_weeks = sorted(drifted.loc[drifted["group"] == "S03", "week"])
    assert closed_weeks and closed_weeks[0] in (CLOSURE, CLOSURE + 1) and min(closed_weeks) >= CLOSURE
    assert set(drifted.loc[drifted["group"].isin(["S01", "S02", "S04"]), "week"]) == set()
    assert not drifted["week"].lt(CLOSURE).any()  # before the closure: seasons and holidays only, no alarm
