"""Drift (tests by kind, groups, minimum counts, calibration on history, Benjamini-Hochberg), live and
estimated quality, and the report with its alerts: on small synthetic frames whose truth is known."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from civicml.errors import InvalidInput
from monitoring import (DriftSettings, MonitoringPolicy, RecordStore, Reference, column_kinds, detect_drift, drifting_since,
                        estimate_vs_real, live_quality, monitor, new_answer_id, parse_window)
from monitoring.quality import macro_f1

WEEK = 7 * 86400
T0 = pd.Timestamp("2026-01-05", tz="UTC").timestamp()  # a Monday
GROUPS = ("A", "B", "C")
WORDS = ("pothole road street crack sign light trash bin park tree water drain noise music party dog "
         "shelter food help bench grass swing hydrant leak pipe").split()


def _frame(rng, weeks, start_week, per_group=80, probs=(0.5, 0.3, 0.2), shift=None, season=0.0):
    """Rows with a category, a number and a text per group and week; ``shift``: (group, week) -> changes."""
    rows = []
    for w in range(start_week, start_week + weeks):
        for g in GROUPS:
            changed = shift.get((g, w), {}) if shift else {}
            p = np.array(changed.get("probs", probs), dtype=float)
            p = p * (1 + season * np.sin(w) * np.array([1, -1, 0])[:len(p)])
            p = p / p.sum()
            for _ in range(per_group):
                words = list(rng.choice(WORDS, size=6))
                if rng.random() < changed.get("new_words", 0):
                    words[:3] = ["scooter", "rental", "abandoned"]
                rows.append({"kind": "abc"[int(rng.choice(3, p=p))], "size": rng.normal(changed.get("mean", 0), 1),
                             "text": " ".join(words), "group": g, "district": g,
                             "time": T0 + w * WEEK + rng.uniform(0, WEEK)})
    return pd.DataFrame(rows)


def _reference(rng, season=0.0, weeks=20):
    frame = _frame(rng, weeks, -weeks, season=season)
    return Reference(frame.drop(columns=["group"]), time="time", group="district", name="last year")


def test_column_kinds_follow_type_and_count():
    frame = pd.DataFrame({"n": np.linspace(0, 1, 50), "hour": np.arange(50) % 24, "flag": [True, False] * 25,
                          "district": ["A", "B"] * 25, "text": ["a long free text written by a caller"] * 50})
    assert column_kinds(frame, frame.columns) == {"n": "numeric", "hour": "categorical", "flag": "categorical",
                                                  "district": "categorical", "text": "text"}
    assert column_kinds(frame, ["hour"], {"hour": "numeric"}) == {"hour": "numeric"}
    with pytest.raises(InvalidInput, match="kind of column 'hour'"):
        column_kinds(frame, ["hour"], {"hour": "ordinal"})


def test_no_shift_means_no_drift_and_every_cell_is_tested():
    rng = np.random.default_rng(1)
    found = detect_drift(_frame(rng, 4, 0), _reference(rng), "7d", columns=["kind", "size", "text"])
    assert set(found["status"]) == {"ok"}
    assert len(found) == 4 * 3 * 4  # windows x columns x (3 groups + all)
    assert (found["q"] >= found["p"]).all() and found["calibrated"].all()


def test_a_shift_in_one_group_is_found_there_and_when():
    rng = np.random.default_rng(2)
    shift = {("B", 2): {"probs": (0.2, 0.3, 0.5), "mean": 0.8, "new_words": 0.5},
             ("B", 3): {"probs": (0.2, 0.3, 0.5), "mean": 0.8, "new_words": 0.5}}
    found = detect_drift(_frame(rng, 4, 0, shift=shift), _reference(rng), "7d", columns=["kind", "size", "text"])
    drifted = found[found["status"] == "drifted"]
    assert set(drifted["group"]) <= {"B", "*"}
    in_b = drifted[drifted["group"] == "B"]
    assert set(in_b["column"]) == {"kind", "size", "text"}
    assert set(in_b["window"]) == {"2026-01-19T00:00Z", "2026-01-26T00:00Z"}
    tests = dict(zip(found["column"], found["test"]))
    assert tests == {"kind": "chi2", "size": "ks", "text": "chi2"}
    since = drifting_since(found)
    row = since[(since["column"] == "text") & (since["group"] == "B")].iloc[0]
    assert (row["since"], row["windows"]) == ("2026-01-19T00:00Z", 2)


def test_a_group_under_the_minimum_count_is_too_few_and_never_tested():
    rng = np.random.default_rng(3)
    live = _frame(rng, 1, 0)
    live = pd.concat([live[live["group"] != "C"], live[live["group"] == "C"].head(10)])
    found = detect_drift(live, _reference(rng), "7d", columns=["kind"], settings=DriftSettings(min_count=30))
    cell = found[found["group"] == "C"].iloc[0]
    assert cell["status"] == "too few" and cell["n"] == 10 and np.isnan(cell["p"]) and np.isnan(cell["q"])
    assert set(found[found["group"] != "C"]["status"]) == {"ok"}


def test_calibration_on_history_absorbs_seasons_that_raw_p_values_call_drift():
    """The reference's weeks swing with a season; live weeks swing the same way. Raw p-values flag them;
    the history-calibrated ones do not, and a real shift still shows."""
    rng = np.random.default_rng(4)
    reference = _reference(rng, season=0.6, weeks=30)
    live = _frame(rng, 6, 0, season=0.6, shift={("A", 5): {"probs": (0.05, 0.15, 0.8)}})
    found = detect_drift(live, reference, "7d", columns=["kind"])
    phi = found.loc[found["group"] == "*", "phi"].iloc[0]
    assert phi > 1.5
    raw = found[(found["p_raw"] < 0.001) & ~((found["group"].isin(["A", "*"])) & (found["window"] == found["window"].max()))]
    assert len(raw) > 0  # what raw p-values would have alarmed on
    drifted = found[found["status"] == "drifted"]
    assert set(zip(drifted["group"], drifted["window"])) <= {("A", found["window"].max()), ("*", found["window"].max())}
    assert ("A", found["window"].max()) in set(zip(drifted["group"], drifted["window"]))
    uncalibrated = detect_drift(live, Reference(reference.frame, time=None, group="district"), "7d", columns=["kind"])
    assert not uncalibrated["calibrated"].any() and (uncalibrated["phi"].dropna() == 1).all()
    assert (uncalibrated["status"] == "drifted").sum() > len(drifted)


def test_benjamini_hochberg_corrects_across_columns_and_groups():
    rng = np.random.default_rng(5)
    found = detect_drift(_frame(rng, 2, 0), _reference(rng), "7d", columns=["kind", "size", "text"])
    for _, part in found.groupby("window"):
        p, q = part["p"].to_numpy(), part["q"].to_numpy()
        order = np.argsort(p)
        assert np.all(np.diff(q[order]) >= -1e-12)  # adjusted values keep the order
        m = len(p)
        assert np.allclose(q[order][-1], p[order][-1]) and np.all(q <= np.minimum(1, p * m) + 1e-12)


def test_drift_refuses_what_it_cannot_compare():
    rng = np.random.default_rng(6)
    with pytest.raises(InvalidInput, match="not in both"):
        detect_drift(_frame(rng, 1, 0), _reference(rng), "7d", columns=["missing"])
    for bad in ("7 days", "0d", "-1h", "", "30s"):
        with pytest.raises(InvalidInput, match="window"):
            parse_window(bad)
    assert parse_window("7d") == 7 * 86400 and parse_window("12h") == 43200 and parse_window("2w") == 14 * 86400


# -- quality -------------------------------------------------------------------------------------
def _records(n_per_group=40, accuracy=None, labelled=1.0, seed=0, weeks=1, answer_kind="label"):
    rng = np.random.default_rng(seed)
    accuracy = accuracy or {"A": 0.9, "B": 0.5}
    rows = []
    for w in range(weeks):
        for g, acc in accuracy.items():
            for _ in range(n_per_group):
                truth = ["roads", "water", "parks"][int(rng.integers(3))]
                right = rng.random() < acc
                answer = truth if right else {"roads": "water", "water": "parks", "parks": "roads"}[truth]
                if answer_kind == "number":
                    truth, answer = float(rng.normal(100, 10)), None
                    answer = truth + (2.0 if g == "A" else -6.0)
                rows.append({"answer_id": new_answer_id(), "model": "m", "version": "2", "variant": "fp32",
                             "arm": "champion", "time": T0 + w * WEEK + rng.uniform(0, WEEK), "group": g,
                             "inputs": {"kind": "abc"[int(rng.integers(3))], "district": g}, "answer": answer,
                             "confidence": acc if answer_kind == "label" else None, "latency_ms": 1.0,
                             "outcome": truth if rng.random() < labelled else None, "outcome_time": None})
    return pd.DataFrame(rows)


def test_macro_f1_is_scikit_learns():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(7)
    truth, said = rng.choice(list("abcd"), 300), rng.choice(list("abce"), 300)
    assert macro_f1(truth, said) == pytest.approx(f1_score(truth, said, average="macro", zero_division=0))


def test_live_quality_per_group_with_the_estimate_marked():
    records = _records()
    q = live_quality(records, "7d")
    real = q[~q["estimate"]].set_index(["group", "metric"])["value"]
    truth = records.assign(right=records["answer"] == records["outcome"]).groupby("group")["right"].mean()
    assert real[("A", "accuracy")] == pytest.approx(truth["A"]) and real[("B", "accuracy")] == pytest.approx(truth["B"])
    assert real[("*", "accuracy")] == pytest.approx((records["answer"] == records["outcome"]).mean())
    assert ("A", "macro_f1") in real.index
    est = q[q["estimate"]].set_index("group")["value"]
    assert est["A"] == pytest.approx(0.9) and est["B"] == pytest.approx(0.5)  # mean top-class confidence
    assert set(q[q["estimate"]]["metric"]) == {"accuracy"}


def test_before_labels_only_the_estimate_exists_and_it_is_checked_once_they_come():
    unlabelled = _records(labelled=0.0)
    q = live_quality(unlabelled, "7d")
    assert len(q) and q["estimate"].all()
    assert estimate_vs_real(unlabelled, "7d").empty
    check = estimate_vs_real(_records(n_per_group=400, seed=1), "7d", min_labelled=30)
    assert set(check["group"]) == {"A", "B", "*"}
    assert check["gap"].abs().max() < 0.08  # confidences here are calibrated: the estimate holds


def test_regression_quality_is_mae_without_an_estimate():
    q = live_quality(_records(answer_kind="number"), "7d")
    assert set(q["metric"]) == {"mae"} and not q["estimate"].any()
    assert q.set_index("group")["value"]["A"] == pytest.approx(2.0)


# -- the report ----------------------------------------------------------------------------------
def test_monitoring_policy_names_unknown_fields_and_checks_types():
    policy = MonitoringPolicy.from_mapping({"drift_p": 0.05, "min_quality": 0.8, "window": "1d"})
    assert (policy.drift_p, policy.min_quality, policy.window) == (0.05, 0.8, "1d")
    with pytest.raises(InvalidInput, match="did you mean 'drift_p'"):
        MonitoringPolicy.from_mapping({"drift_pvalue": 0.01})
    with pytest.raises(InvalidInput, match="must be a number"):
        MonitoringPolicy.from_mapping({"min_quality": "high"})
    with pytest.raises(InvalidInput, match="drift_p"):
        MonitoringPolicy.from_mapping({"drift_p": 2})
    with pytest.raises(InvalidInput, match="window"):
        MonitoringPolicy.from_mapping({"window": "weekly"})


def test_monitor_reports_quality_alerts_per_group_and_renders(tmp_path):
    records = _records(n_per_group=60, weeks=2, seed=3)
    reference = pd.DataFrame({"kind": list("abc") * 100, "district": ["A", "B"] * 150,
                              "time": T0 - WEEK + np.arange(300) * 100.0})
    store = RecordStore(f"sqlite:///{tmp_path / 'r.db'}")
    from monitoring.records import AnswerRecord

    store.write([AnswerRecord(**{k: r[k] for k in ("answer_id", "model", "version", "variant", "arm", "time",
                                                    "group", "inputs", "answer", "confidence", "latency_ms")})
                 for r in records.to_dict(orient="records")])
    from monitoring import add_feedback

    add_feedback(store, [(r["answer_id"], r["outcome"]) for r in records.to_dict(orient="records")])
    report = monitor(store, Reference(reference, group="district"), policy={"min_quality": 0.8}, model="m",
                     gated={"accuracy": 0.93})
    quality = [a for a in report.alerts if a.kind == "quality"]
    assert {a.group for a in quality} == {"B", "*"}  # A answers at 0.9
    assert all(a.value < 0.8 and a.threshold == 0.8 and not a.estimate for a in quality)
    estimated = [a for a in report.alerts if a.kind == "estimated_quality"]
    assert {a.group for a in estimated} == {"B", "*"} and all(a.estimate for a in estimated)
    assert report.records == 240 and report.labelled == 240
    data = json.loads(json.dumps(report.to_dict()))
    assert data["alerts"] and data["quality"] and data["gated"] == {"accuracy": 0.93}
    text = report.text()
    assert "ALERT quality" in text and "gated at promotion: accuracy 0.930" in text and "estimate vs real" in text


def test_monitor_on_an_empty_store_says_so(tmp_path):
    report = monitor(RecordStore(f"sqlite:///{tmp_path / 'r.db'}"),
                     pd.DataFrame({"kind": list("abc") * 20, "time": T0 + np.arange(60.0)}), model="m")
    assert (report.records, report.alerts, report.windows) == (0, [], [])
    assert "0 answers" in report.text() and json.dumps(report.to_dict())


def test_a_reference_from_a_training_dataset_keeps_features_time_and_group(small_requests):
    reference = Reference.from_dataset(small_requests, group="district", answers=small_requests.y,
                                       confidence=np.full(len(small_requests), 0.8))
    frame = reference.frame
    assert set(frame.columns) == {*small_requests.features, "time", "answer", "confidence"}
    assert reference.times() is not None and np.isfinite(reference.times()).all()
    assert set(reference.groups()) == set(small_requests.frame["district"])
    assert not frame["description"].str.contains("@").any()  # the dataset is masked already
