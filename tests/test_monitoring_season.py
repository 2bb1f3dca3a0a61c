"""The seeded year of 311 traffic, and the monitor on it: the new complaint is flagged in its district
within a window of its first week, a control year of seasons alone raises no alarm, labels fed back make
Riverside's live quality drop, and the estimate before labels is close to the real figure (fast settings:
fewer weeks watched, the full year as reference)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from monitoring import monitor
from monitoring.simulation import score_detection, simulate_year
from projects.service_requests.season import SeasonSettings, generate_season, holidays

FAST = SeasonSettings(weeks=34, new_kind_week=30)


def test_the_season_is_seeded_and_has_its_cycles_its_new_complaint_and_late_labels():
    a, b = generate_season(7, replace(FAST, weeks=36)), generate_season(7, replace(FAST, weeks=36))
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(generate_season(8, replace(FAST, weeks=36)))
    new = a[a["new_kind"]]
    assert set(new["district"]) == {"Riverside"} and new["week"].min() == 30
    assert new["description"].str.contains("scoot", case=False).mean() > 0.85  # a few carry a typo
    assert not a.loc[~a["new_kind"], "description"].str.contains("scooter", case=False).any()
    weekday = a.groupby(a["created_at"].dt.dayofweek).size()
    assert weekday[6] < 0.75 * weekday[0]  # Sundays are quiet
    july4 = a[a["created_at"].dt.date == pd.Timestamp("2026-07-04").date()]
    assert july4["holiday"].all() and pd.Timestamp("2026-07-04") in holidays(2026)
    assert len(july4) < 0.75 * len(a[a["created_at"].dt.date == pd.Timestamp("2026-07-06").date()])
    night = a[(a["hour"] >= 22) | (a["hour"] < 5)]
    weekend = night["created_at"].dt.dayofweek.isin([4, 5])
    assert (night.loc[weekend, "department"] == "noise").mean() > (night.loc[~weekend, "department"] == "noise").mean()
    delay = (a["labelled_at"] - a["created_at"]).dt.total_seconds() / 86400
    assert delay.min() >= 1 and 3 < delay.mean() < 7 and 0.05 < a["labelled_at"].isna().mean() < 0.15
    summer, winter = a[a["week"].between(26, 32)], a[a["week"] < 6]
    assert (summer["department"] == "parks").mean() > (winter["department"] == "parks").mean() + 0.03


@pytest.fixture(scope="module", params=[11, 12])
def watched(request):
    """A shifted year and its monitor report, for two seeds."""
    shifted = simulate_year(request.param, FAST)
    return request.param, shifted, monitor(shifted.records, shifted.reference, policy={"min_quality": 0.85})


def test_the_new_complaint_is_flagged_in_its_district_and_quiet_seasons_are_not(watched):
    seed, shifted, report = watched
    score = score_detection(report.drift, FAST)
    assert score.delay is not None and score.delay <= 1
    drifting = report.drifting
    assert ("description", "Riverside") in set(zip(drifting["column"], drifting["group"]))
    assert any(a.kind == "drift" and a.group == "Riverside" and a.column == "description" for a in report.alerts)
    control = simulate_year(seed + 500, replace(FAST, new_kind_week=None), base=shifted)
    quiet = score_detection(monitor(control.records, control.reference).drift, control.season)
    assert quiet.windows >= 30 and quiet.false_alarm_rate <= 0.05, quiet.alarms


def test_labels_make_riversides_quality_drop_and_the_estimate_tracks_the_real_figure(watched):
    _, shifted, report = watched
    q = report.quality
    real = q[(~q["estimate"]) & (q["metric"] == "accuracy")]
    before = real[(real["group"] == "Riverside") & (real["window"] < "2026-07-27")]["value"].mean()
    after = real[(real["group"] == "Riverside") & (real["window"] >= "2026-08-03")]["value"].mean()
    others = real[(real["group"] == "Harbor") & (real["window"] >= "2026-08-03")]["value"].mean()
    assert after < before - 0.1 and after < others - 0.1
    assert any(a.kind == "quality" and a.group == "Riverside" for a in report.alerts)
    check = report.estimate_check
    calm = check[check["window"] < "2026-07-27"]
    assert len(calm) > 100 and calm["gap"].abs().mean() < 0.05
    assert np.isfinite(check["gap"]).all()
