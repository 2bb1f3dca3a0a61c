"""``monitor``: one report over recorded traffic (what drifted, where, since when; live and estimated
quality) and the alerts its policy's thresholds raise.

The thresholds are the ``monitoring:`` section of a model's promotion policy, read by the registry's
:class:`registry.MonitoringPolicy` (re-exported here)::

    monitoring:
      window: 7d            # the report's time window
      drift_p: 0.01         # Benjamini-Hochberg level for drift, per window, across columns and groups
      min_count: 30         # rows a window needs in a group to be tested or judged ("too few" otherwise)
      min_quality: 0.80     # the live metric's floor (a ceiling for an error such as mae), per group
      metric: accuracy      # accuracy, macro_f1 (classifiers) or mae (regressors)
      webhook: https://...  # new alerts POSTed here as JSON
      record: off           # `civicml serve`'s --record when it is not given

Alerts are plain objects (:class:`Alert`) until :func:`audit_alerts` writes the new ones to the model's audit
trail (:func:`registry.record_alerts`, each alert once) and POSTs them to the policy's webhook
(:func:`post_alerts`: a short timeout, and a failure is an answer, never an exception).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd

from civicml.errors import InvalidInput
from monitoring.drift import DriftSettings, Reference, detect_drift, drifting_since
from monitoring.quality import estimate_vs_real, infer_task, live_quality, parse_window
from monitoring.records import RecordStore
from registry import MonitoringPolicy

WEBHOOK_TIMEOUT_S = 5.0


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
    version: str | None = None  # the version, variant and canary arm a quality alert is about
    variant: str | None = None
    arm: str | None = None

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
    found = detect_drift(live, reference, window,
                         settings=DriftSettings(min_count=policy.min_count, drift_p=policy.drift_p))
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
    lower = policy.lower_is_better
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
                                 row.window, row.group, None, float(row.value), policy.min_quality, estimate,
                                 *(_text(getattr(row, k, None)) for k in ("version", "variant", "arm"))))
    return out


def _text(value) -> str | None:
    return None if value is None or value != value else str(value)


def post_alerts(url: str, payload: Mapping[str, Any], timeout: float = WEBHOOK_TIMEOUT_S) -> dict[str, Any]:
    """POST ``payload`` as JSON to ``url``: ``{"webhook": host, "status": 200}``, or with ``error`` when it
    failed (no answer in ``timeout`` seconds, refused, or a status other than 2xx). Never raises: a webhook
    that is down must not cost the alert its audit record."""
    import httpx

    from registry import webhook_host

    host = webhook_host(url)
    try:
        response = httpx.post(url, json=payload, timeout=timeout, follow_redirects=False)
    except httpx.HTTPError as err:
        return {"webhook": host, "error": f"{type(err).__name__}: {err}".replace(url, host)[:300]}
    if response.is_success:
        return {"webhook": host, "status": response.status_code}
    return {"webhook": host, "status": response.status_code, "error": f"answered HTTP {response.status_code}"}


def audit_alerts(report: MonitorReport, policy: MonitoringPolicy, settings=None,
                 context: Mapping[str, Any] | None = None):
    """Write ``report``'s alerts that its model's audit trail does not hold yet as ``alert`` records
    (:func:`registry.record_alerts`), POSTing the new ones to ``policy.webhook`` first when it is set; the
    registry's :class:`registry.AuditedAlerts`. ``context``: more fields for every record (the run)."""
    from registry import record_alerts

    if not report.model:
        raise InvalidInput("a report without a model (monitor(..., model=NAME)) has no audit trail to write to")

    def send(fresh: list[dict]) -> dict[str, Any]:
        return post_alerts(policy.webhook, {"model": report.model, "source": "civicml monitor",
                                            "window": report.window, "alerts": fresh})

    length = int(parse_window(report.window))  # 7d and 1w are one window length
    return record_alerts(report.model, [{**a.to_dict(), "window_seconds": length} for a in report.alerts], settings,
                         send=send if policy.webhook else None,
                         context={"thresholds": policy.to_record(), **dict(context or {})})
