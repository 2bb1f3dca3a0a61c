"""Global views of a registered version on a held-out set: PNG charts with their data beside them.

Written by :func:`write_all` (called from :func:`registry.rules.insights` at registration):

=========================  =====================================================================
``importance.png/.csv``    permutation importance of each input column (drop in accuracy, or rise
                           in mean absolute error, when the column is shuffled; on up to 400
                           rows), and the words the rules rely on most
``predictions.png/.csv``   how often each class is predicted (or a histogram of predicted values)
``predicted_vs_actual``    a confusion matrix (classification) or a scatter (regression), + CSV
``calibration.png/.json``  classifiers with probabilities: confidence vs accuracy in ten bins
``by_district.png/.csv``   accuracy (or MAE) per district, with rows, and the gap between best and
                           worst in ``by_district.json`` (fairness across neighbourhoods): on every
                           held-out row, computed as the model card computes its per-district figures;
                           with each district's impact ratio (its figure over the best district's of
                           30 rows or more: :func:`registry.equity.impact_ratios`), also in ``map.json``
                           and in the map's title (the lowest, and any under 0.8)
``map.png/.json``          the district map coloured by that figure on a fixed scale (red worse, blue
                           better, whatever the metric's direction; a legend states the scale),
                           districts under 30 rows hatched, when boundaries and lat/lon exist:
                           every held-out request as a point inside its recorded district (wrong
                           answers as crosses), or, where rows come from a few fixed sites (road
                           sensors), one marker per site with its own figure; rows without a
                           district column get the district their coordinates fall in
=========================  =====================================================================
"""

from __future__ import annotations

import json
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

from civicml.answers import read_probabilities
from registry.card import SMALL_GROUP, evaluate
from registry.equity import FOUR_FIFTHS, impact_ratios
from registry.gates import predicted_labels

DISTRICT = "district"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def probabilities(pyfunc_model, features: pd.DataFrame, output=None) -> tuple[list, np.ndarray] | None:
    """(classes, probabilities) when the model gives them, else None; ``output``: the model's answer to
    ``features`` when already asked (a frame with ``p_<class>`` columns is read, not asked again)."""
    try:
        if pyfunc_model.metadata.flavors.get("python_function", {}).get("loader_module") == "mlflow.sklearn":
            raw = pyfunc_model.get_raw_model()
            if hasattr(raw, "predict_proba"):
                return list(raw.classes_), np.asarray(raw.predict_proba(features))
            return None
        out = pyfunc_model.predict(features) if output is None else output
        if isinstance(out, pd.DataFrame):
            return read_probabilities(out)
    except Exception:  # noqa: BLE001 - an SVC without probabilities, say: no calibration chart
        return None
    return None


def _regression(answers) -> bool:
    return np.asarray(answers).dtype.kind in "fc"


def _score(truth, answers, regression: bool) -> float:
    truth, answers = np.asarray(truth), np.asarray(answers)
    if regression:
        return float(np.abs(truth.astype(float) - answers.astype(float)).mean())
    return float((truth == answers).mean())


PERMUTATION_ROWS = 400  # rows shuffled per column: enough to rank the columns, cheap for a slow model


def permutation_importance(predict: Callable, features: pd.DataFrame, truth, seed: int = 0,
                           max_rows: int = PERMUTATION_ROWS) -> dict[str, float]:
    """How much worse each column's shuffling makes the answers (one shuffle per column, on at most
    ``max_rows`` rows)."""
    truth = np.asarray(truth)
    if len(features) > max_rows:
        keep = np.sort(np.random.default_rng(seed).choice(len(features), max_rows, replace=False))
        features, truth = features.iloc[keep].reset_index(drop=True), truth[keep]
    answers = predicted_labels(predict(features))
    regression = _regression(answers)
    base = _score(truth, answers, regression)
    rng = np.random.default_rng(seed)
    out = {}
    for column in features.columns:
        shuffled = features.copy()
        shuffled[column] = features[column].to_numpy()[rng.permutation(len(features))]
        score = _score(truth, predicted_labels(predict(shuffled)), regression)
        out[str(column)] = round(score - base if regression else base - score, 6)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _bar(path: Path, labels, values, title: str, xlabel: str, horizontal: bool = True, color: str = "#0072b2"):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.32 * len(labels) + 1.2)) if horizontal else (7, 4))
    if horizontal:
        ax.barh(list(map(str, labels))[::-1], list(values)[::-1], color=color)
        ax.set_xlabel(xlabel)
    else:
        ax.bar(list(map(str, labels)), list(values), color=color)
        ax.set_ylabel(xlabel)
        ax.tick_params(axis="x", rotation=30)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@dataclass
class ViewData:
    """What the views are drawn from: the held-out rows with their ``target``, the model's ``answers`` and
    ``predict`` on the ``features``, its class ``probabilities``, the district ``boundaries``, the rules'
    ``word_importance``; ``district_rows`` (held-out frame, answers) when the per-district figures and the
    map are to be on more rows than the other views (every held-out row, where the others use a sample)."""

    holdout: pd.DataFrame
    target: str
    answers: Any
    features: pd.DataFrame
    predict: Callable
    probabilities: Any = None
    boundaries: Any = None
    word_importance: dict[str, float] | None = None
    district_rows: Any = None


def write_all(folder: Path, data: ViewData) -> list[str]:
    """Every view that fits this model and data into ``folder``; returns the file names written."""
    holdout, target, answers, features, predict = data.holdout, data.target, data.answers, data.features, \
        data.predict
    probabilities, boundaries, word_importance, district_rows = data.probabilities, data.boundaries, \
        data.word_importance, data.district_rows
    folder = Path(folder)
    truth = holdout[target].to_numpy()
    answers = np.asarray(answers)
    regression = _regression(answers)
    written = importance_view(folder, predict, features, truth, word_importance)
    written += predictions_view(folder, answers, regression)
    written += predicted_vs_actual_view(folder, truth, answers, regression)
    if probabilities is not None and not regression:
        written += calibration_view(folder, truth, probabilities)
    # by district, and the map: on every held-out row when the caller asked the model about them all
    if district_rows is not None:
        holdout, answers = district_rows[0].reset_index(drop=True), np.asarray(district_rows[1])
        truth = holdout[target].to_numpy()
    written += district_views(folder, holdout, truth, answers, regression, boundaries)
    return written


def importance_view(folder: Path, predict: Callable, features: pd.DataFrame, truth,
                    word_importance: dict[str, float] | None) -> list[str]:
    """``importance.*``: each column's permutation importance, and the rules' features' share in the rules."""
    columns = permutation_importance(predict, features, truth)
    words = dict(list((word_importance or {}).items())[:15])
    rows = [("column", k, v) for k, v in columns.items()] + [("rule feature", k, v) for k, v in words.items()]
    pd.DataFrame(rows, columns=["kind", "feature", "importance"]).to_csv(folder / "importance.csv", index=False)
    _bar(folder / "importance.png", list(columns) + list(words), list(columns.values()) + list(words.values()),
         "Importance of input columns and of the rules' features",
         "columns: accuracy drop (MAE rise) when shuffled; features: share in the rules")
    return ["importance.csv", "importance.png"]


def predictions_view(folder: Path, answers: np.ndarray, regression: bool) -> list[str]:
    """``predictions.*``: how the answers are distributed (a histogram of values, or a count per class)."""
    if regression:
        plt = _plt()
        pd.DataFrame({"predicted": answers}).describe().to_csv(folder / "predictions.csv")
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.hist(answers.astype(float), bins=30, color="#0072b2")
        ax.set_xlabel("predicted value")
        ax.set_ylabel("rows")
        ax.set_title("Distribution of predictions", fontsize=10)
        fig.tight_layout()
        fig.savefig(folder / "predictions.png", dpi=100)
        plt.close(fig)
    else:
        counts = pd.Series(answers).value_counts()
        counts.rename_axis("class").rename("rows").to_csv(folder / "predictions.csv")
        _bar(folder / "predictions.png", counts.index, counts.values, "How often each answer is given", "rows",
             horizontal=False)
    return ["predictions.csv", "predictions.png"]


def predicted_vs_actual_view(folder: Path, truth: np.ndarray, answers: np.ndarray, regression: bool) -> list[str]:
    """``predicted_vs_actual.*``: a scatter of values against the truth, or the confusion matrix."""
    plt = _plt()
    if regression:
        pd.DataFrame({"actual": truth, "predicted": answers}).to_csv(folder / "predicted_vs_actual.csv", index=False)
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.scatter(truth.astype(float), answers.astype(float), s=6, alpha=0.5, color="#0072b2")
        lo, hi = float(min(truth.min(), answers.min())), float(max(truth.max(), answers.max()))
        ax.plot([lo, hi], [lo, hi], color="#d55e00", linewidth=1)
        ax.set_xlabel("actual")
        ax.set_ylabel("predicted")
    else:
        labels = sorted(set(truth.tolist()) | set(answers.tolist()), key=str)
        matrix = pd.crosstab(pd.Categorical(truth, labels), pd.Categorical(answers, labels), dropna=False)
        matrix.index.name, matrix.columns.name = "actual", "predicted"
        matrix.to_csv(folder / "predicted_vs_actual.csv")
        fig, ax = plt.subplots(figsize=(6, 5))
        ax.imshow(matrix.to_numpy(), cmap="Blues")
        ax.set_xticks(range(len(labels)), [str(x) for x in labels], rotation=40, ha="right")
        ax.set_yticks(range(len(labels)), [str(x) for x in labels])
        for (i, j), v in np.ndenumerate(matrix.to_numpy()):
            ax.text(j, i, int(v), ha="center", va="center", fontsize=8,
                    color="white" if v > matrix.to_numpy().max() / 2 else "black")
        ax.set_xlabel("predicted")
        ax.set_ylabel("actual")
    ax.set_title("Predicted vs actual", fontsize=10)
    fig.tight_layout()
    fig.savefig(folder / "predicted_vs_actual.png", dpi=100)
    plt.close(fig)
    return ["predicted_vs_actual.csv", "predicted_vs_actual.png"]


def calibration_view(folder: Path, truth: np.ndarray, probabilities) -> list[str]:
    """``calibration.*``: confidence against the share answered right, in ten bins, and the expected
    calibration error; ``probabilities`` is (classes, one row of class probabilities per held-out row)."""
    classes, probs = probabilities
    confidence = probs.max(axis=1)
    chosen = np.asarray(classes, dtype=object)[probs.argmax(axis=1)]
    right = chosen == truth
    bins = np.linspace(0, 1, 11)
    which = np.clip(np.digitize(confidence, bins) - 1, 0, 9)
    table = [{"bin": f"{bins[b]:.1f}-{bins[b + 1]:.1f}", "rows": int((which == b).sum()),
              "confidence": float(confidence[which == b].mean()) if (which == b).any() else None,
              "accuracy": float(right[which == b].mean()) if (which == b).any() else None} for b in range(10)]
    filled = [t for t in table if t["rows"]]
    ece = sum(t["rows"] * abs(t["confidence"] - t["accuracy"]) for t in filled) / max(1, len(truth))
    (folder / "calibration.json").write_text(json.dumps({"bins": table, "expected_calibration_error": ece},
                                                        indent=2))
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="#999999", linewidth=1, label="perfect")
    ax.plot([t["confidence"] for t in filled], [t["accuracy"] for t in filled], marker="o", color="#0072b2",
            label=f"model (ECE {ece:.3f})")
    ax.set_xlabel("confidence of the answer")
    ax.set_ylabel("share right")
    ax.set_title("Calibration", fontsize=10)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(folder / "calibration.png", dpi=100)
    plt.close(fig)
    return ["calibration.json", "calibration.png"]


def by_district(truth, answers, districts, regression: bool) -> pd.DataFrame:
    """Rows and ``accuracy`` (or ``mae``) per district: the model card's per-district figures
    (:func:`registry.card.evaluate` with ``report_by: [district]``), computed there and only there."""
    frame = pd.DataFrame({DISTRICT: districts})
    table = evaluate(truth, answers, frame, "regression" if regression else "classification", "",
                     report_by=(DISTRICT,)).per_group[DISTRICT]
    table.index = table.index.astype(str)
    return table[["rows", "mae" if regression else "accuracy"]]


def map_scale(metric: str, truth, regression: bool):
    """The map's fixed colour scale: accuracy on 0..1; an error from 0 up to the error of answering the held-out
    median for every row (derived once from the data, and stated in the legend). Red is worse either way."""
    from civicml.geo import Scale
    from projects.metrics import bounds, direction

    if not regression:
        low, high = bounds(metric)
        worst, best = (low, high) if direction(metric) == "maximize" else (high, low)
        return Scale(metric, worst, best, "share of rows answered right")
    truth = np.asarray(truth, dtype=float)
    bound = float(np.abs(truth - np.median(truth)).mean()) or 1.0
    return Scale(metric, round(bound, 4), 0.0, "in the target's units",
                 f"bound = the {metric} of answering the held-out median for every row")


def district_views(folder: Path, holdout: pd.DataFrame, truth, answers, regression: bool, boundaries) -> list[str]:
    """``by_district.*`` and, with boundaries and coordinates, ``map.*``; returns the file names written."""
    written: list[str] = []
    located = {"lat", "lon"} <= set(holdout.columns)
    districts = None
    if DISTRICT in holdout.columns:
        districts = holdout[DISTRICT].to_numpy(dtype=object)
    elif located and boundaries:  # fixed sites (sensors): their district from where they stand
        districts = _districts_of(boundaries, holdout["lon"].to_numpy(float), holdout["lat"].to_numpy(float))
        if districts is not None and pd.isna(districts).all():
            districts = None
    if districts is None:
        return written
    per = by_district(truth, answers, districts, regression)
    metric = per.columns[1]
    per.to_csv(folder / "by_district.csv")
    values = per[metric].astype(float)
    rows = per["rows"].astype(int).to_dict()
    ratios = {k: round(v, 4) for k, v in impact_ratios(values.to_dict(), rows, regression, SMALL_GROUP).items()}
    (folder / "by_district.json").write_text(json.dumps({
        "metric": metric, "values": values.round(4).to_dict(), "rows": rows,
        "gap": round(float(values.max() - values.min()), 4), "impact_ratio": ratios}, indent=2))
    _bar(folder / "by_district.png", per.index, values, f"{metric} by district (held-out rows)", metric)
    written += ["by_district.csv", "by_district.json", "by_district.png"]
    if not (boundaries and located):
        return written
    from civicml.geo import fit_points, map_png

    scale = map_scale(metric, truth, regression)
    lon, lat = holdout["lon"].to_numpy(float), holdout["lat"].to_numpy(float)
    sites = places(holdout, truth, answers, regression)
    note = ""
    if sites is not None:  # a few fixed sites (road sensors): one marker each, with its own figure
        points = []
        map_png(boundaries, folder / "map.png", scale=scale, values=values.to_dict(), rows=rows,
                min_rows=SMALL_GROUP, places=[(p["lon"], p["lat"], p["name"], p[metric], p["rows"]) for p in sites],
                title=f"Held-out rows by place ({len(holdout)} rows)" + _ratio_line(ratios, rows, metric))
    else:  # one point per row (311 requests), each in its recorded district: wrong answers marked
        err = np.abs(truth.astype(float) - answers.astype(float)) if regression else None
        ok = (truth == answers) if not regression else err <= np.median(err)
        drawn, moved, omitted = fit_points(boundaries, lon, lat, districts, ok)
        note = f"{len(drawn)} of {len(holdout)} held-out rows drawn" + (
            f"; {moved} moved into their recorded district (coordinates outside it)" if moved else "") + (
            f"; {omitted} not drawn (no recorded district on the map)" if omitted else "")
        map_png(boundaries, folder / "map.png", scale=scale, values=values.to_dict(), rows=rows, min_rows=SMALL_GROUP,
                points=[(x, y, o) for x, y, o, _ in drawn], points_note=note,
                title=f"Held-out requests by place ({len(holdout)} rows)" + _ratio_line(ratios, rows, metric))
        points = [{"lon": round(x, 5), "lat": round(y, 5), "ok": o, "district": d} for x, y, o, d in drawn]
    (folder / "map.json").write_text(json.dumps({
        "metric": metric, "values": values.round(4).to_dict(), "rows": rows, "rows_total": len(holdout),
        "scale": scale.to_dict(), "min_rows": SMALL_GROUP, "points_note": note, "points": points,
        "places": sites or [], "impact_ratio": ratios}))
    return written + ["map.json", "map.png"]


def _ratio_line(ratios: dict[str, float], rows: dict[str, int], metric: str) -> str:
    """The map title's second line: the lowest impact ratio among districts of 30 rows or more, and which
    fall under four fifths of the best ("" when no district has the rows)."""
    judged = {k: v for k, v in ratios.items() if rows.get(k, 0) >= SMALL_GROUP and v == v}
    if not judged:
        return ""
    lowest = min(judged, key=judged.get)
    under = [k for k, v in sorted(judged.items(), key=lambda kv: kv[1]) if v < FOUR_FIFTHS]
    return (f"\nimpact ratio ({metric} over the best district's): lowest {judged[lowest]:.2f} in {lowest}"
            + (f"; under {FOUR_FIFTHS}: {', '.join(under)}" if under else ""))


MAX_PLACES = 60  # at most this many distinct coordinates read as fixed sites rather than one point per row
PLACE_NAMES = ("sensor_id", "site", "station", "place")


def places(holdout: pd.DataFrame, truth, answers, regression: bool) -> list[dict] | None:
    """Rows that come from a few fixed sites (each seen on several rows): one entry per site, with its
    name, rows and figure (``accuracy`` or ``mae``); None when rows have coordinates of their own."""
    frame = pd.DataFrame({"lon": holdout["lon"].to_numpy(float), "lat": holdout["lat"].to_numpy(float),
                          "truth": np.asarray(truth), "answer": np.asarray(answers)})
    name_column = next((c for c in PLACE_NAMES if c in holdout.columns), None)
    frame["name"] = holdout[name_column].astype(str).to_numpy() if name_column else ""
    frame = frame[np.isfinite(frame["lon"]) & np.isfinite(frame["lat"])]
    sites = frame.groupby(["lon", "lat"], sort=True)
    if frame.empty or sites.ngroups > MAX_PLACES or sites.ngroups * 2 > len(frame):
        return None
    metric = "mae" if regression else "accuracy"
    out = []
    for (x, y), group in sites:
        name = group["name"].iloc[0] or f"{y:.4f}, {x:.4f}"
        out.append({"name": str(name), "lon": round(float(x), 5), "lat": round(float(y), 5), "rows": len(group),
                    metric: round(_score(group["truth"], group["answer"], regression), 4)})
    return out


def _districts_of(boundaries, lon: np.ndarray, lat: np.ndarray) -> np.ndarray | None:
    """The district each (lon, lat) falls in (None outside every district); each place looked up once."""
    from civicml.geo import locate

    found: dict[tuple[float, float], str | None] = {}
    out = np.empty(len(lon), dtype=object)
    for i, (x, y) in enumerate(zip(lon, lat)):
        if not (np.isfinite(x) and np.isfinite(y)):
            out[i] = None
            continue
        if (x, y) not in found:
            found[(x, y)] = locate(boundaries, float(x), float(y))
        out[i] = found[(x, y)]
    return out


__all__ = ["permutation_importance", "places", "probabilities", "write_all"]
