"""A simulated year of served 311 answers: what the monitor is measured on (bench/bench_monitoring.py) and
tested against (tests/test_monitoring_season.py).

Last year's traffic (:func:`projects.service_requests.season.generate_season`, no new complaint) is the
reference and trains a small router (TF-IDF words and a logistic regression: the monitor is judged, not
the model); this year's traffic, with the new complaint in one district from a given week, is answered
by it and recorded as serving's recorder would record it (masked, with an answer id, version, arm and
confidence). A label is known once its ticket has closed before ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from monitoring.drift import Reference, epoch_seconds
from monitoring.masking import RecordMasking
from projects.service_requests.season import SeasonSettings, generate_season

MODEL = "service-requests-router"
INPUTS = ("description", "district", "channel", "hour", "weekday")
CALLER = ("name", "phone", "email")


@dataclass
class SimulatedYear:
    records: pd.DataFrame  # in the shape RecordStore.read gives
    reference: Reference  # last year's traffic, masked, with the router's answers
    truth: pd.DataFrame  # this year's generated requests (raw: with the callers' personal data)
    season: SeasonSettings
    model: object = None  # the router (a scikit-learn pipeline)


def fit_router(inputs: pd.DataFrame, departments: pd.Series, seed: int = 0):
    """A small text router: TF-IDF words of ``description`` and a logistic regression."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(TfidfVectorizer(min_df=2, ngram_range=(1, 2), sublinear_tf=True),
                          LogisticRegression(C=5.0, max_iter=300, random_state=seed))
    return model.fit(inputs["description"].astype(str), departments.astype(str))


def _answers(model, inputs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    proba = model.predict_proba(inputs["description"].astype(str))
    return model.classes_[proba.argmax(axis=1)], proba.max(axis=1)


def simulate_year(seed: int, season: SeasonSettings | None = None, now: pd.Timestamp | None = None,
                  train_rows: int = 3000, base: SimulatedYear | None = None) -> SimulatedYear:
    """This year (``season``, seeded by ``seed``) answered by a router trained on last year (seed + 1000).
    ``base``: a simulated year whose reference and router are reused (a control year beside a shifted one)."""
    season = season or SeasonSettings()
    from projects.service_requests import ServiceRequests

    masking = RecordMasking.for_use_case(ServiceRequests())
    rng = np.random.default_rng(seed)
    if base is None:
        last_year = replace(season, start=str((pd.Timestamp(season.start) - pd.Timedelta(weeks=52)).date()),
                            weeks=52, new_kind_week=None)
        before = generate_season(seed + 1000, last_year)
        ref_inputs = masking.mask_frame(before[[*INPUTS, *CALLER]])
        train = rng.choice(len(before), size=min(train_rows, len(before)), replace=False)
        model = fit_router(ref_inputs.iloc[train], before["department"].iloc[train], seed)
        ref_answer, ref_confidence = _answers(model, ref_inputs)
        reference = Reference(ref_inputs.assign(answer=ref_answer, confidence=ref_confidence,
                                                time=epoch_seconds(before["created_at"])),
                              time="time", group="district", name="last year's traffic")
    else:
        reference, model = base.reference, base.model
    this = generate_season(seed, season)
    live_inputs = masking.mask_frame(this[[*INPUTS, *CALLER]])
    answer, confidence = _answers(model, live_inputs)
    now = now if now is not None else this["created_at"].max() + pd.Timedelta(days=1)
    known = this["labelled_at"].notna() & (this["labelled_at"] <= now)
    records = pd.DataFrame({
        "answer_id": [rng.bytes(16).hex() for _ in range(len(this))], "model": MODEL, "version": "1",
        "variant": "fp32", "arm": "champion", "time": epoch_seconds(this["created_at"]),
        "group": this["district"].to_numpy(), "inputs": live_inputs.to_dict(orient="records"),
        "answer": answer, "confidence": confidence, "latency_ms": np.nan,
        "outcome": this["department"].where(known, None).to_numpy(dtype=object),
        "outcome_time": epoch_seconds(this["labelled_at"]).astype(float)})
    records.loc[~known.to_numpy(), "outcome_time"] = np.nan
    return SimulatedYear(records, reference, this, season, model)


@dataclass(frozen=True)
class DetectionScore:
    """How a drift report did on a simulated year: the delay (in windows) before the new complaint was
    flagged in its district (None: never), and the false alarms on everything the new complaint did not
    touch: every cell before its week; after it, every cell but its district's and, in all districts
    together, the columns it moves (the text, the district, the answer and its confidence)."""

    delay: int | None
    onset: str
    false_alarm_windows: int  # windows with at least one drifted cell that is not shifted
    windows: int
    false_alarm_tests: int
    tests: int
    alarms: tuple = ()  # (window, column, group) of each false alarm

    @property
    def false_alarm_rate(self) -> float:
        return self.false_alarm_windows / self.windows if self.windows else 0.0

    @property
    def per_test_rate(self) -> float:
        return self.false_alarm_tests / self.tests if self.tests else 0.0


def score_detection(found: pd.DataFrame, season: SeasonSettings, column: str = "description") -> DetectionScore:
    """Score drift findings (``monitoring.detect_drift``, weekly windows) against the simulated truth."""
    from monitoring.quality import window_label, window_starts

    start = pd.Timestamp(season.start, tz="America/New_York")
    onset_time = (start + pd.Timedelta(weeks=season.new_kind_week)).timestamp() if season.new_kind_week is not None \
        else float("inf")
    onset = window_label(window_starts([onset_time], "7d")[0]) if np.isfinite(onset_time) else "-"
    # the window holding the onset (weeks start on Monday, local midnight is 05:00Z: the onset window opens
    # a few hours before the first new complaint)
    after = found["window"] >= onset
    moved = found["column"].isin([column, "district", "answer", "confidence"])
    shifted = after & ((found["group"] == season.new_kind_district) | ((found["group"] == "*") & moved))
    tested = found["status"].isin(["ok", "drifted"])
    alarms = found[tested & ~shifted & (found["status"] == "drifted")]
    windows = sorted(found.loc[tested, "window"].unique())
    hits = found[(found["column"] == column) & (found["group"] == season.new_kind_district) & after
                 & (found["status"] == "drifted")]
    delay = None
    if len(hits):
        later = [w for w in windows if w >= onset]
        delay = later.index(hits["window"].min())
    return DetectionScore(delay=delay, onset=onset, false_alarm_windows=alarms["window"].nunique(),
                          windows=len(windows), false_alarm_tests=len(alarms), tests=int((tested & ~shifted).sum()),
                          alarms=tuple(alarms[["window", "column", "group"]].itertuples(index=False, name=None)))
