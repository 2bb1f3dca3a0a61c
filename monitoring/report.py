"""``monitor``: one report over recorded traffic (what drifted, where, since when; live and estimated
quality) and the alerts its policy's thresholds raise.

The thresholds are the ``monitoring:`` section of a policy, read by :class:`MonitoringPolicy`::

    monitoring:
      window: 7d            # the report's time window
      drift_p: 0.01         # Benjamini-Hochberg level for drift, per window, across columns and groups
      min_count: 30         # rows a window needs in a group to be tested or judged ("too few" otherwise)
      min_quality: 0.80     # the live metric's floor (a ceiling for an error such as mae), per group
      metric: accuracy      # accuracy, macro_f1 (classifiers) or mae (regressors)

Alerts are plain objects (:class:`Alert`); recording them as audited events, showing them in the console
and sending them to a webhook is the caller's (the top floor's) business.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

import numpy as np
import pandas as pd

from civicml.errors import InvalidInput, did_you_mean
from monitoring.drift import DriftSettings, Reference, detect_drift, drifting_since
from monitoring.quality import estimate_vs_real, infer_task, live_quality, parse_window
from monitoring.records import RecordStore

METRICS = {"accuracy": "maximize", "macro_f1": "maximize", "mae": "minimize"}


@dataclass(frozen=True)
class MonitoringPolicy:
    window: str = "7d"
    drift_p: float = 0.01
    min_count: int = 30
    min_quality: float | None = None
    metric: str = "accuracy"

    def __post_init__(self):
        parse_window(self.window)
        if self.metric not in METRICS:
            raise InvalidInput(f"monitoring: field 'metric' must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if self.min_quality is not None and not math.isfinite(self.min_quality):
            raise InvalidInput(f"monitoring: field 'min_quality' must be a finite number, got {self.min_quality}")
        self.drift_settings()  # checks drift_p and min_count

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None, where: str = "monitoring") -> "MonitoringPolicy":
        """From a policy's ``monitoring:`` section; an unknown field is an error that names it."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise InvalidInput(f"{where}: expected a mapping of fields, got {type(data).__name__}")
        known = [f.name for f in fields(cls)]
        values = {}
        for key, raw in data.items():
            if key not in known:
                raise InvalidInput(f"{where}: unknown field '{key}'{did_you_mean(key, known)} "
                                   f"(known: {', '.join(known)})")
            kind = {f.name: f.type for f in fields(cls)}[key]
            values[key] = _convert(key, raw, kind, where)
        return cls(**values)

    def drift_settings(self) -> DriftSettings:
        return DriftSettings(min_count=self.min_count, drift_p=self.drift_p)


def _convert(key: str, raw: Any, kind: str, where: str) -> Any:
    if "float" in kind:
        if raw is None and "None" in kind:
            return None
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise InvalidInput(f"{where}: field '{key}' must be a number, got {raw!r}")
        return float(raw)
    if kind == "int":
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise InvalidInput(f"{where}: field '{key}' must be a whole number, got {raw!r}")
        return raw
    if not isinstance(raw, str):
        raise InvalidInput(f"{where}: field '{key}' must be text, got {raw!r}")
    return raw


@dataclass(frozen=True)
class Alert:
    """A crossed threshold: ``kind`` is ``drift``, ``quality`` or ``estimated_quality``."""

    kind: str
    message: str
    window: str
    group: str | None = None
    column: str | None = None
    value: float | None = None
    threshold: float | None = None
    estimate: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class MonitorReport:
    model: str | None
    window: str
    reference: str
    windows: list[str]
    records: int
    labelled: int
    drift: pd.DataFrame
    drifting: pd.DataFrame
    quality: pd.DataFrame
    estimate_check: pd.DataFrame
    alerts: list[Alert] = field(default_factory=list)
    gated: Mapping[str, float] = field(default_factory=dict)
    min_count: int = 30  # rows a figure needs to be the one the text shows

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "window": self.window, "reference": self.reference, "windows": self.windows,
                "records": self.records, "labelled": self.labelled, "gated": dict(self.gated),
                "drifting": _records(self.drifting), "drift": _records(self.drift),
                "quality": _records(self.quality), "estimate_check": _records(self.estimate_check),
                "alerts": [a.to_dict() for a in self.alerts]}

    def text(self) -> str:
        lines = [f"{self.model or 'records'}: {self.records} answers ({self.labelled} labelled) in "
                 f"{len(self.windows)} windows of {self.window}, against {self.reference}"]
        tested = self.drift[self.drift["status"].isin(["ok", "drifted"])] if len(self.drift) else self.drift
        latest = tested["window"].max() if len(tested) else None
        if latest:
            lines.append(f"latest window tested: {latest}")
        if self.drifting.empty:
            lines.append("drift: none in the latest window tested")
        for row in self.drifting.itertuples():
            lines.append(f"drift: {row.column} in {row.group} since {row.since} ({row.windows} windows, "
                         f"effect {row.effect:.3f}, q {row.q:.2g})")
        too_few = self.drift[(self.drift["status"] == "too few") & (self.drift["window"] == latest)] \
            if latest else self.drift.iloc[0:0]
        if len(too_few):
            lines.append(f"too few rows to test: {', '.join(sorted(set(too_few['group'])))}")
        lines += self._quality_lines()
        lines += [f"ALERT {a.kind}: {a.message}" for a in self.alerts] or ["alerts: none"]
        return "\n".join(lines)

    def _quality_lines(self) -> list[str]:
        q = self.quality
        if q.empty:
            return ["quality: no answers"]
        overall = q[q["group"] == "*"] if "group" in q.columns else q
        lines = []
        for estimate, label in ((False, "live"), (True, "estimated")):
            part = overall[overall["estimate"] == estimate]
            if (part["n"] >= self.min_count).any():
                part = part[part["n"] >= self.min_count]
            if part.empty:
                continue
            last = part[part["window"] == part["window"].max()]
            figures = ", ".join(f"{r.metric} {r.value:.3f} (n={r.n}, {r.version}/{r.arm})" for r in last.itertuples())
            lines.append(f"quality {label} ({last['window'].iloc[0]}): {figures}")
        if self.gated:
            lines.append("gated at promotion: " + ", ".join(f"{k} {v:.3f}" for k, v in self.gated.items()))
        if not self.estimate_check.empty:
            gap = self.estimate_check["gap"].abs()
            lines.append(f"estimate vs real: mean |gap| {gap.mean():.3f} over {len(gap)} cells")
        return lines


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    clean = frame.astype(object).where(frame.notna(), None)
    return [{k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
            for row in clean.to_dict(orient="records")]


def live_frame(records: pd.DataFrame) -> pd.DataFrame:
    """Records with their (masked) inputs as columns, ``answer`` and ``confidence`` beside them: what drift
    compares with a reference."""
    if records.empty:
        return pd.DataFrame(columns=["time", "group", "answer", "confidence"])
    inputs = pd.DataFrame.from_records(list(records["inputs"]), index=records.index)
    out = inputs.assign(answer=records["answer"].map(lambda v: v if isinstance(v, (int, float)) else str(v)),
                        confidence=pd.to_numeric(records["confidence"], errors="coerce"),
                        time=records["time"].astype(float), group=records["group"])
    return out.reset_index(drop=True)


def monitor(records: RecordStore | pd.DataFrame, reference: Reference | pd.DataFrame, window: str | None = None,
            policy: MonitoringPolicy | Mapping[str, Any] | None = None, model: str | None = None,
            gated: Mapping[str, float] | None = None) -> MonitorReport:
    """The report over ``records`` (a store, read for ``model``, or a frame of records) against
    ``reference``; ``window`` overrides the policy's. ``gated``: the figures the version passed its gates
    with, shown beside the live ones."""
    policy = policy if isinstance(policy, MonitoringPolicy) else MonitoringPolicy.from_mapping(policy)
    window = window or policy.window
    parse_window(window)
    if isinstance(records, RecordStore):
        records = records.read(model=model)
    if not isinstance(reference, Reference):
        reference = Reference(reference, time="time" if "time" in reference.columns else None)
    live = live_frame(records)
    found = detect_drift(live, reference, window, settings=policy.drift_settings())
    task = infer_task(records["answer"]) if len(records) else "classification"
    quality = live_quality(records, window, task=task)
    check = estimate_vs_real(records, window, min_labelled=policy.min_count, figures=quality) \
        if task == "classification" else estimate_vs_real(records.iloc[0:0], window)
    windows = sorted(found["window"].unique()) if len(found) else sorted(quality["window"].unique())
    report = MonitorReport(model=model, window=window, reference=reference.name, windows=list(windows),
                           records=len(records), labelled=int(records["outcome"].notna().sum()) if len(records) else 0,
                           drift=found, drifting=drifting_since(found), quality=quality, estimate_check=check,
                           gated=dict(gated or {}), min_count=policy.min_count)
    report.alerts = alerts(report, policy)
    return report


def alerts(report: MonitorReport, policy: MonitoringPolicy) -> list[Alert]:
    """Drift in the latest window, and quality under the floor in each group's latest judged window."""
    out = []
    for row in report.drifting.itertuples():
        out.append(Alert("drift", f"{row.column} drifted in {row.group} since {row.since} (q {row.q:.2g} < "
                                  f"{policy.drift_p:g})", row.window, row.group, row.column,
                         float(row.q), policy.drift_p))
    if policy.min_quality is None or report.quality.empty:
        return out
    lower = METRICS[policy.metric] == "minimize"
    q = report.quality[(report.quality["metric"] == policy.metric) & (report.quality["n"] >= policy.min_count)]
    keys = [c for c in ("version", "variant", "arm", "group") if c in q.columns]
    for estimate, kind in ((False, "quality"), (True, "estimated_quality")):
        part = q[q["estimate"] == estimate]
        if part.empty:
            continue
        latest = part.sort_values("window").groupby(keys, sort=True).tail(1)
        for row in latest.itertuples():
            crossed = row.value > policy.min_quality if lower else row.value < policy.min_quality
            if crossed:
                what = "estimated " if estimate else ""
                out.append(Alert(kind, f"{what}{policy.metric} {row.value:.3f} in {row.group} "
                                       f"({row.version}/{row.arm}, window {row.window}, n={row.n}) is "
                                       f"{'over' if lower else 'under'} {policy.min_quality:g}",
                                 row.window, row.group, None, float(row.value), policy.min_quality, estimate))
    return out
