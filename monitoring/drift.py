"""Drift: has what the model is asked (and what it answers) moved away from a reference?

For every input column and every output (``answer``, ``confidence``), per time window and per group (and
all groups together, ``group = "*"``), the live rows are compared with the reference's rows of the same
group. The test is chosen by the column's kind (:func:`column_kinds`):

* ``numeric``: two-sample Kolmogorov-Smirnov (scipy), with the Wasserstein distance as the effect size;
* ``categorical`` (strings, booleans, integers with few values such as ``hour``): a two-sample chi-square on
  the counts of the reference's most frequent values, the rest it holds pooled as ``<other>`` and values it
  never held as ``<unseen>``, with the Jensen-Shannon distance as the effect size;
* ``text``: the same chi-square on its word counts (the reference's most frequent words, ``<other>``,
  ``<unseen>``): a new kind of complaint shows as words the reference never used.

A cell with fewer than ``min_count`` live rows (or reference rows) is reported as ``too few`` and never
tested.

**Calibrated on history, not raw p-values.** A city's traffic moves with the seasons and its free text
comes in phrasings whose words move together, so a textbook p-value against a year-long reference is too
small. The reference's own time windows are the history: each history window of each group is compared
with the rest of its group's reference exactly as a live window will be, giving the statistic
``r`` of an ordinary window (``X2 / df`` for counts, ``sqrt(n_eff) * D`` for KS). A gamma distribution
fitted to those ``r`` by their mean and variance (the group's own history; for a district, also every
district's history together, which sees more windows) gives each live ``r`` a tail probability; the
calibrated ``p`` is the largest of those and the textbook one, so history can only make a test more
careful. ``threshold`` is the statistic a live window must pass at ``drift_p`` (before correction) and
``phi`` its ratio to the textbook's. Without ``min_history`` history windows of at least ``min_count``
rows a cell is not calibrated (``calibrated`` False: the textbook p-value).

**Multiple testing.** In each window the calibrated p-values of every tested column and group are
corrected together (Benjamini-Hochberg); a cell drifted when its adjusted ``q`` is under ``drift_p``.

Why scipy and not Evidently: Evidently (0.7) is a separate tool with its own reports, workspace and
dependencies (and not installable on an offline mirror here); the tests themselves are a few lines of
scipy, and what matters (groups, minimum counts, calibration on history, the correction) is CivicML's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial.distance import jensenshannon

from civicml.errors import InvalidInput
from monitoring.quality import window_label, window_starts

KINDS = ("numeric", "categorical", "text")
ALL = "*"
_TOKEN = re.compile(r"[a-z]{2,}")
COLUMNS = ("window", "column", "kind", "group", "n", "n_reference", "test", "statistic", "effect", "phi",
           "calibrated", "threshold", "p_raw", "p", "q", "status")


@dataclass(frozen=True)
class DriftSettings:
    min_count: int = 30  # live (and reference) rows a cell needs to be tested
    drift_p: float = 0.01  # Benjamini-Hochberg level within a window
    categories: int = 30  # most frequent values kept per categorical column
    tokens: int = 60  # most frequent words kept per text column
    min_history: int = 5  # history windows a cell needs to be calibrated

    def __post_init__(self):
        if not (0 < self.drift_p < 1):
            raise InvalidInput(f"drift_p must be between 0 and 1, got {self.drift_p}")
        if self.min_count < 2:
            raise InvalidInput(f"min_count must be at least 2, got {self.min_count}")


@dataclass(frozen=True)
class Reference:
    """What live traffic is compared with: a frame of inputs (and, if known, the model's ``answer`` and
    ``confidence`` on them), its ``time`` column (epoch seconds or datetimes: the history that calibrates)
    and its ``group`` column (e.g. ``district``). ``name`` says what it is (training data, held-out set,
    last year's traffic)."""

    frame: pd.DataFrame
    time: str | None = "time"
    group: str | None = None
    name: str = "reference"
    kinds: Mapping[str, str] = field(default_factory=dict)  # a column's kind, where inference would be wrong

    @classmethod
    def from_dataset(cls, dataset, group: str | None = None, name: str = "training data", answers=None,
                     confidence=None) -> "Reference":
        """A reference from a :class:`projects.Dataset` (already masked): its features, its first datetime column
        as the history's time (311: ``created_at``), and, when given, the model's ``answers`` and
        ``confidence`` on its rows (so that the outputs are compared too)."""
        frame = dataset.frame
        when = next((c for c in frame.columns if pd.api.types.is_datetime64_any_dtype(frame[c])), None)
        columns = list(dict.fromkeys([*dataset.features, *([group] if group and group in frame.columns else [])]))
        out = frame[columns].copy()
        if when is not None:
            out["time"] = epoch_seconds(frame[when]).astype(float)
        if answers is not None:
            out["answer"] = list(answers)
        if confidence is not None:
            out["confidence"] = np.asarray(confidence, dtype=float)
        return cls(out.reset_index(drop=True), time="time" if when is not None else None, group=group, name=name)

    def times(self) -> np.ndarray | None:
        if not self.time or self.time not in self.frame.columns:
            return None
        return epoch_seconds(self.frame[self.time])

    def groups(self) -> np.ndarray:
        if not self.group or self.group not in self.frame.columns:
            return np.full(len(self.frame), "-", dtype=object)
        return self.frame[self.group].astype(str).to_numpy(dtype=object)


def epoch_seconds(values) -> np.ndarray:
    series = pd.Series(values)
    if pd.api.types.is_datetime64_any_dtype(series):
        if series.dt.tz is None:
            series = series.dt.tz_localize("UTC")
        return (series - pd.Timestamp("1970-01-01", tz="UTC")).dt.total_seconds().to_numpy()
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)


def column_kinds(frame: pd.DataFrame, columns, given: Mapping[str, str] | None = None) -> dict[str, str]:
    """``numeric``, ``categorical`` or ``text`` for each column (``given`` overrides; checked)."""
    given = dict(given or {})
    for column, kind in given.items():
        if kind not in KINDS:
            raise InvalidInput(f"drift: kind of column '{column}' must be one of {', '.join(KINDS)}, got {kind!r}")
    out = {}
    for column in columns:
        if column in given:
            out[column] = given[column]
            continue
        s = frame[column].dropna()
        if pd.api.types.is_bool_dtype(s):
            out[column] = "categorical"
        elif pd.api.types.is_numeric_dtype(s):
            integral = len(s) and np.all(np.asarray(s, dtype=float) == np.round(np.asarray(s, dtype=float)))
            out[column] = "categorical" if integral and s.nunique() <= 31 else "numeric"
        else:
            text = s.astype(str)
            words = text.str.count(r"\s+").mean() + 1 if len(text) else 0
            out[column] = "text" if words >= 4 else "categorical"
    return out


# -- encoding ------------------------------------------------------------------------------------
def tokens(text: Any) -> list[str]:
    return _TOKEN.findall(str(text).lower()) if isinstance(text, str) else []


class _Encoder:
    """A column's values as codes 0..k-1, learnt from the reference: its most frequent values (words, for
    text) each have a code; ``k-2`` is every other value the reference holds (``<other>``); ``k-1`` a value
    the reference never held (``<unseen>``: a new category, a new word)."""

    def __init__(self, kind: str, reference: pd.Series, settings: DriftSettings):
        self.kind = kind
        if kind == "text":
            counts = pd.Series([t for v in reference for t in tokens(v)], dtype=object).value_counts()
            keep = counts.index[:settings.tokens]
            self.known = set(counts.index[counts >= 2])
        else:
            counts = reference.astype(str).value_counts()
            keep = counts.index[:settings.categories]
            self.known = set(counts.index)
        self.index = {v: i for i, v in enumerate(keep)}
        self.k = len(self.index) + 2

    def _code(self, value: str) -> int:
        code = self.index.get(value)
        if code is not None:
            return code
        return self.k - 2 if value in self.known else self.k - 1

    def rows(self, values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        """(row number, code) pairs: one per row for categories, one per word for text."""
        if self.kind == "text":
            row, code = [], []
            for i, v in enumerate(values):
                for t in tokens(v):
                    row.append(i)
                    code.append(self._code(t))
            return np.asarray(row, dtype=np.int64), np.asarray(code, dtype=np.int64)
        codes = [self._code(str(v)) for v in values]
        return np.arange(len(values), dtype=np.int64), np.asarray(codes, dtype=np.int64)


def _histograms(encoded: tuple[np.ndarray, np.ndarray], k: int, cell: np.ndarray, n_cells: int) -> np.ndarray:
    """Counts per cell: (n_cells, k); rows whose cell is -1 are left out."""
    row, code = encoded
    where = cell[row] if len(row) else np.zeros(0, dtype=np.int64)
    ok = where >= 0
    flat = np.bincount(where[ok] * k + code[ok], minlength=n_cells * k)
    return flat.reshape(n_cells, k).astype(float)


MIN_EXPECTED = 5.0


def chi2_two_sample(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pearson's chi-square of each row pair of counts ``a`` (live) against ``b`` (reference): (X2, df).

    Values the live sample is expected to hold fewer than 5 times (by the reference's proportions) are pooled
    into one cell first, the textbook rule that keeps the statistic's tail close to chi-square's; the last
    cell (``<unseen>``: values the reference never held) is never pooled away, since a new kind of value is
    what drift most often is (its heavier tail is the history calibration's to absorb)."""
    a, b = np.atleast_2d(np.asarray(a, dtype=float)), np.atleast_2d(np.asarray(b, dtype=float))
    na, nb = a.sum(axis=1, keepdims=True), b.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        small = (b / nb) * na < MIN_EXPECTED
    small[:, -1] = False
    a = np.concatenate([np.where(small, 0, a), (a * small).sum(axis=1, keepdims=True)], axis=1)
    b = np.concatenate([np.where(small, 0, b), (b * small).sum(axis=1, keepdims=True)], axis=1)
    total = na + nb
    col = a + b
    with np.errstate(divide="ignore", invalid="ignore"):
        ea, eb = col * na / total, col * nb / total
        x2 = np.where(col > 0, (a - ea) ** 2 / ea + (b - eb) ** 2 / eb, 0.0).sum(axis=1)
    df = np.maximum((col > 0).sum(axis=1) - 1, 1)
    return np.nan_to_num(x2), df


def _ks(live: np.ndarray, ref_sorted: np.ndarray, effect: bool = True) -> tuple[float, float, float]:
    """(sqrt(n_eff) * D, D, Wasserstein distance) of two samples, the reference already sorted: the
    two-sample Kolmogorov-Smirnov statistic and the first Wasserstein distance, from the empirical CDFs."""
    a, b = np.sort(live), ref_sorted
    points = np.concatenate([a, b])
    points.sort()
    cdf_a = np.searchsorted(a, points, side="right") / len(a)
    cdf_b = np.searchsorted(b, points, side="right") / len(b)
    d = float(np.max(np.abs(cdf_a - cdf_b)))
    n_eff = len(a) * len(b) / (len(a) + len(b))
    wasserstein = float(np.sum(np.abs(cdf_a - cdf_b)[:-1] * np.diff(points))) if effect else float("nan")
    return float(np.sqrt(n_eff) * d), d, wasserstein


class _Calibration:
    """What history says about a column's statistic ``r`` (``X2 / df`` for counts, ``sqrt(n_eff) * D`` for
    KS) in ordinary windows: gamma distributions fitted by moments to the history windows' ``r`` (the
    group's own, and for a district every district's together). A live ``r`` gets the largest of their
    tail probabilities and the textbook one (``null_sf``): history can only make a test more careful."""

    def __init__(self, null_sf, null_isf, fits=()):
        self.null_sf, self.null_isf, self.fits = null_sf, null_isf, list(fits)

    @property
    def calibrated(self) -> bool:
        return bool(self.fits)

    def sf(self, r: float) -> float:
        return max([float(self.null_sf(r))] + [float(stats.gamma.sf(r, k, scale=theta)) for k, theta in self.fits])

    def isf(self, alpha: float) -> float:
        return max([float(self.null_isf(alpha))] +
                   [float(stats.gamma.isf(alpha, k, scale=theta)) for k, theta in self.fits])

    def phi(self, alpha: float) -> float:
        """How much further than the textbook's the history puts the threshold at ``alpha``."""
        return self.isf(alpha) / float(self.null_isf(alpha))


def _fit(ratios, settings: DriftSettings) -> list[tuple[float, float]]:
    r = np.asarray([x for x in ratios if np.isfinite(x)], dtype=float)
    if len(r) < settings.min_history or r.mean() <= 0 or r.var(ddof=1) <= 0:
        return []
    mean, var = r.mean(), r.var(ddof=1)
    return [(mean * mean / var, var / mean)]


def _calibrations(history: dict[int, list[float]], n_groups: int, settings, null_sf, null_isf) -> list[_Calibration]:
    """One calibration per group (the last is every group together) from each group's history ``r``."""
    districts = [r for g in range(n_groups - 1) for r in history.get(g, [])]
    pooled = _fit(districts, settings)
    out = []
    for g in range(n_groups):
        fits = _fit(history.get(g, []), settings)
        if g < n_groups - 1 and fits:
            fits += pooled
        out.append(_Calibration(null_sf, null_isf, fits))
    return out


# -- the test ------------------------------------------------------------------------------------
def detect_drift(live: pd.DataFrame, reference: Reference, window: str | float = "7d", columns=None,
          settings: DriftSettings | None = None) -> pd.DataFrame:
    """Drift findings (one row per window, column and group; see the module's docstring).

    ``live``: one row per answer with the input columns, ``answer``/``confidence`` (optional), ``time``
    (epoch seconds) and ``group``."""
    settings = settings or DriftSettings()
    ref = reference.frame
    if columns is None:
        columns = [c for c in live.columns if c in ref.columns and c not in ("time", "group", reference.time)]
    missing = [c for c in columns if c not in ref.columns or c not in live.columns]
    if missing:
        raise InvalidInput(f"drift: column '{missing[0]}' is not in both the live records and the reference")
    if not len(live) or not columns:
        return pd.DataFrame(columns=COLUMNS)
    kinds = column_kinds(ref, columns, reference.kinds)
    plan = _Plan.build(live, reference, window)
    rows = []
    for column in columns:
        if column == reference.group:
            rows += _column(column, kinds[column], live, ref, plan, settings, groups_only=[ALL])
        else:
            rows += _column(column, kinds[column], live, ref, plan, settings)
    found = pd.DataFrame(rows, columns=COLUMNS)
    return _correct(found, settings)


@dataclass
class _Plan:
    """Which cell (window x group) each live and reference row falls in."""

    live_windows: np.ndarray  # window starts, sorted
    groups: list[str]  # the reference's groups, then ALL
    live_cell: np.ndarray  # per live row: window_index * n_groups + group_index (its own group)
    live_all: np.ndarray  # per live row: the cell of its window's ALL group
    ref_group: np.ndarray  # per reference row: group index
    ref_hist: np.ndarray | None  # per reference row: history window index (None: no time column)
    n_hist: int

    @classmethod
    def build(cls, live: pd.DataFrame, reference: Reference, window) -> "_Plan":
        starts = window_starts(epoch_seconds(live["time"]), window)
        live_windows = np.unique(starts)
        ref_groups = reference.groups()
        groups = sorted(set(ref_groups.tolist())) + [ALL]
        index = {g: i for i, g in enumerate(groups)}
        live_group = live["group"].astype(str).to_numpy() if "group" in live.columns else \
            np.full(len(live), "-", dtype=object)
        g = np.array([index.get(v, -1) for v in live_group])
        w = np.searchsorted(live_windows, starts)
        cell = np.where(g >= 0, w * len(groups) + g, -1)
        times = reference.times()
        hist, n_hist = None, 0
        if times is not None and np.isfinite(times).all():
            hist_starts = window_starts(times, window)
            unique = np.unique(hist_starts)
            hist, n_hist = np.searchsorted(unique, hist_starts), len(unique)
        return cls(live_windows, groups, cell, w * len(groups) + len(groups) - 1,
                   np.array([index[v] for v in ref_groups]), hist, n_hist)


def _column(column, kind, live, ref, plan: _Plan, settings: DriftSettings, groups_only=None) -> list[dict]:
    n_groups = len(plan.groups)
    wanted = [i for i, g in enumerate(plan.groups) if groups_only is None or g in groups_only]
    if kind == "numeric":
        return _numeric(column, live, ref, plan, settings, wanted)
    encoder = _Encoder(kind, ref[column].dropna(), settings)
    k = encoder.k
    live_codes, ref_codes = encoder.rows(live[column]), encoder.rows(ref[column])
    n_live_cells = len(plan.live_windows) * n_groups
    live_counts = _histograms(live_codes, k, plan.live_cell, n_live_cells) + \
        _histograms(live_codes, k, plan.live_all, n_live_cells)
    live_rows = np.bincount(plan.live_cell[plan.live_cell >= 0], minlength=n_live_cells) + \
        np.bincount(plan.live_all, minlength=n_live_cells)
    ref_by_group = _histograms(ref_codes, k, plan.ref_group, n_groups)
    ref_by_group[-1] = ref_by_group[:-1].sum(axis=0)
    ref_rows = np.bincount(plan.ref_group, minlength=n_groups).astype(float)
    ref_rows[-1] = ref_rows[:-1].sum()
    calibration = _count_calibration(ref_codes, k, plan, ref_by_group, settings)
    rows = []
    for w, start in enumerate(plan.live_windows):
        for g in wanted:
            c = w * n_groups + g
            base = _base(start, column, kind, plan.groups[g], int(live_rows[c]), int(ref_rows[g]), "chi2")
            if live_rows[c] < settings.min_count or ref_rows[g] < settings.min_count:
                rows.append({**base, "status": "too few"})
                continue
            x2, df = chi2_two_sample(live_counts[c], ref_by_group[g])
            x2, df = float(x2[0]), int(df[0])
            cal = calibration[g]
            effect = float(jensenshannon(live_counts[c] + 1e-12, ref_by_group[g] + 1e-12))
            textbook = float(stats.chi2.isf(settings.drift_p, df))
            threshold = max(textbook, df * cal.isf(settings.drift_p) if cal.fits else 0.0)
            rows.append({**base, "statistic": x2, "effect": effect, "phi": threshold / textbook,
                         "calibrated": cal.calibrated, "p_raw": float(stats.chi2.sf(x2, df)),
                         "p": max(float(stats.chi2.sf(x2, df)), cal.sf(x2 / df) if cal.fits else 0.0),
                         "threshold": threshold, "status": "tested"})
    return rows


def _count_calibration(ref_codes, k, plan: _Plan, ref_by_group, settings) -> list[_Calibration]:
    n_groups = len(plan.groups)
    history: dict[int, list[float]] = {}
    if plan.ref_hist is not None:
        cells = plan.ref_hist * n_groups + plan.ref_group
        hist = _histograms(ref_codes, k, cells, plan.n_hist * n_groups).reshape(plan.n_hist, n_groups, k)
        rows = np.bincount(cells, minlength=plan.n_hist * n_groups).reshape(plan.n_hist, n_groups)
        hist[:, -1] = hist[:, :-1].sum(axis=1)
        rows[:, -1] = rows[:, :-1].sum(axis=1)
        for g in range(n_groups):
            ok = rows[:, g] >= settings.min_count
            if ok.any():
                windows = hist[ok, g]
                x2, df = chi2_two_sample(windows, ref_by_group[g][None, :] - windows)  # each against the rest
                history[g] = list(x2 / df)
    # r = X2 / df: the textbook tail is chi-square's with the live cell's df (read at test time)
    return _calibrations(history, n_groups, settings, null_sf=lambda r: 0.0, null_isf=lambda a: 1.0)


def _numeric(column, live, ref, plan: _Plan, settings: DriftSettings, wanted) -> list[dict]:
    n_groups = len(plan.groups)
    live_values = pd.to_numeric(live[column], errors="coerce").to_numpy(dtype=float)
    ref_values = pd.to_numeric(ref[column], errors="coerce").to_numpy(dtype=float)
    rows = []
    by_group = {g: ((plan.ref_group == g) | (g == n_groups - 1)) & np.isfinite(ref_values) for g in wanted}
    ref_sorted = {g: np.sort(ref_values[by_group[g]]) for g in wanted}
    history: dict[int, list[float]] = {}
    for g in range(n_groups):  # each history window against its group's whole reference (1/n of it)
        mask = ((plan.ref_group == g) | (g == n_groups - 1)) & np.isfinite(ref_values)
        ordered = ref_sorted[g] if g in ref_sorted else np.sort(ref_values[mask])
        if plan.ref_hist is not None and len(ordered):
            for h in np.unique(plan.ref_hist):
                a = ref_values[mask & (plan.ref_hist == h)]
                if len(a) >= settings.min_count:
                    history.setdefault(g, []).append(_ks(a, ordered, effect=False)[0])
    calibration = _calibrations(history, n_groups, settings, stats.kstwobign.sf, stats.kstwobign.isf)
    for w, start in enumerate(plan.live_windows):
        for g in wanted:
            c = w * n_groups + g
            inside = (plan.live_cell == c) | (plan.live_all == c)
            a, b = live_values[inside], ref_sorted[g]
            a = a[np.isfinite(a)]
            base = _base(start, column, "numeric", plan.groups[g], len(a), len(b), "ks")
            if len(a) < settings.min_count or len(b) < settings.min_count:
                rows.append({**base, "status": "too few"})
                continue
            scaled, d, wasserstein = _ks(a, b)
            cal = calibration[g]
            n_eff = len(a) * len(b) / (len(a) + len(b))
            rows.append({**base, "statistic": d, "effect": wasserstein, "phi": cal.phi(settings.drift_p),
                         "calibrated": cal.calibrated, "p_raw": float(stats.kstwobign.sf(scaled)),
                         "p": cal.sf(scaled), "threshold": cal.isf(settings.drift_p) / np.sqrt(n_eff),
                         "status": "tested"})
    return rows


def _base(start, column, kind, group, n, n_reference, test) -> dict:
    return {"window": window_label(start), "column": column, "kind": kind, "group": group, "n": n,
            "n_reference": n_reference, "test": test, "statistic": np.nan, "effect": np.nan, "phi": np.nan,
            "calibrated": False, "threshold": np.nan, "p_raw": np.nan, "p": np.nan, "q": np.nan}


def _correct(found: pd.DataFrame, settings: DriftSettings) -> pd.DataFrame:
    """Benjamini-Hochberg within each window, across columns and groups; ``drifted`` where q < drift_p."""
    found = found.copy()
    tested = found["status"] == "tested"
    for _, part in found[tested].groupby("window"):
        found.loc[part.index, "q"] = stats.false_discovery_control(part["p"].to_numpy(), method="bh")
    found.loc[tested & (found["q"] < settings.drift_p), "status"] = "drifted"
    found.loc[tested & ~(found["q"] < settings.drift_p), "status"] = "ok"
    return found.reset_index(drop=True)


def drifting_since(found: pd.DataFrame) -> pd.DataFrame:
    """For each column and group drifted in the latest tested window (a window still filling, with too few
    rows everywhere, is not the latest): since which window it has been drifting (the first of the unbroken
    run of drifted windows up to the latest), and for how many windows."""
    columns = ["column", "group", "window", "since", "windows", "effect", "q"]
    tested = found[found["status"].isin(["ok", "drifted"])] if len(found) else found
    if tested.empty:
        return pd.DataFrame(columns=columns)
    windows = sorted(tested["window"].unique())
    latest = windows[-1]
    out = []
    for (column, group), part in tested.groupby(["column", "group"]):
        status = dict(zip(part["window"], part["status"]))
        if status.get(latest) != "drifted":
            continue
        run = 0
        for w in reversed(windows):
            if status.get(w) != "drifted":
                break
            run += 1
        last = part[part["window"] == latest].iloc[0]
        out.append({"column": column, "group": group, "window": latest, "since": windows[len(windows) - run],
                    "windows": run, "effect": float(last["effect"]), "q": float(last["q"])})
    return pd.DataFrame(out, columns=columns)
