"""What a monitoring report leaves in MLflow: one run in the ``monitoring`` experiment per ``civicml monitor``.

The run (params ``model``, ``window``, ``reference``; metrics ``records``, ``labelled``, ``alerts``,
``drifting``) holds:

* ``report.json``: :meth:`MonitorReport.to_dict`, the whole report;
* ``quality.png``: the live metric per window and group, the estimate from confidence beside it (dashed);
* ``drift.png``: per input column (and the outputs), the drift effect per window over every group together,
  the windows where it drifted marked;
* ``map_quality.png`` and ``map_drift.png``: the districts (the use case's boundaries, drawn by
  :func:`civicml.geo.map_png` as the held-out map is) coloured by the live metric of the latest judged
  window, and by the share of columns that drifted in the latest tested window;
* ``districts.json``: the figures those maps draw (what the console's map reads back).

The run is written through :func:`civicml.tracking.fluent`, never MLflow's process-wide state as found.
:func:`latest_run` finds a model's newest monitoring run (by its ``model`` param) for the console.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from monitoring.report import MonitorReport

EXPERIMENT = "monitoring"
ALL = "*"
CHARTS = ("quality.png", "drift.png", "map_quality.png", "map_drift.png")


@dataclass(frozen=True)
class DistrictFigures:
    """Per group (district): the live metric of its latest judged window (``estimate`` where no window had
    labels) and its rows, and the share of its tested columns that drifted in the latest tested window."""

    metric: str
    quality: dict[str, float]
    rows: dict[str, int]
    estimated: list[str]
    drift: dict[str, float]
    drift_window: str | None
    min_rows: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def district_figures(report: MonitorReport, metric: str = "accuracy") -> DistrictFigures:
    q = report.quality
    quality, rows, estimated = {}, {}, []
    if not q.empty:
        part = q[(q["metric"] == metric) & (q["group"] != ALL)]
        for group, cells in part.groupby("group"):
            labelled = cells[~cells["estimate"]]
            cells = labelled if len(labelled) else cells
            best = cells.sort_values(["window", "n"]).iloc[-1]
            quality[str(group)], rows[str(group)] = float(best["value"]), int(best["n"])
            if bool(best["estimate"]):
                estimated.append(str(group))
    d = report.drift
    tested = d[d["status"].isin(["ok", "drifted"]) & (d["group"] != ALL)] if len(d) else d
    drift, window = {}, None
    if len(tested):
        window = tested["window"].max()
        latest = tested[tested["window"] == window]
        drift = {str(g): float((cells["status"] == "drifted").mean()) for g, cells in latest.groupby("group")}
    return DistrictFigures(metric, quality, rows, estimated, drift, window, report.min_count)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _times(labels) -> pd.Series:
    return pd.to_datetime(pd.Series(list(labels)), format="%Y-%m-%dT%H:%MZ", utc=True)


def quality_chart(report: MonitorReport, path: Path, metric: str = "accuracy") -> Path | None:
    """The live metric per window, one line per group (all groups together in black), the estimate dashed."""
    q = report.quality
    q = q[q["metric"] == metric] if len(q) else q
    if q.empty:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    colours = plt.get_cmap("tab10")
    for i, (group, cells) in enumerate(sorted(q.groupby("group"), key=lambda kv: (kv[0] == ALL, str(kv[0])))):
        colour = "black" if group == ALL else colours(i % 10)
        name = "all groups" if group == ALL else str(group)
        for estimate, style in ((False, "-"), (True, "--")):
            line = cells[cells["estimate"] == estimate].groupby("window")["value"].mean().sort_index()
            if len(line):
                ax.plot(_times(line.index), line.to_numpy(), style, marker="o", markersize=3, color=colour,
                        label=f"{name}{' (estimate)' if estimate else ''}")
    ax.set_title(f"{report.model or 'records'}: live {metric} per {report.window} window (dashed: estimated "
                 f"from confidence)", fontsize=10)
    ax.set_ylabel(metric)
    ax.legend(fontsize=7, ncol=2, loc="best")
    fig.autofmt_xdate()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def drift_chart(report: MonitorReport, path: Path) -> Path | None:
    """The drift effect of each column per window over all groups together; drifted windows marked."""
    d = report.drift
    tested = d[d["status"].isin(["ok", "drifted"])] if len(d) else d
    if tested.empty:
        return None
    overall = tested[tested["group"] == ALL]
    tested = overall if len(overall) else tested.groupby(["window", "column"], as_index=False).agg(
        effect=("effect", "max"), status=("status", lambda s: "drifted" if (s == "drifted").any() else "ok"))
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for column, cells in tested.groupby("column"):
        cells = cells.sort_values("window")
        ax.plot(_times(cells["window"]), cells["effect"].to_numpy(), marker="o", markersize=3, label=str(column))
        hit = cells[cells["status"] == "drifted"]
        if len(hit):
            ax.scatter(_times(hit["window"]), hit["effect"].to_numpy(), s=60, marker="x", color="#ca0020", zorder=3)
    ax.set_title(f"{report.model or 'records'}: drift effect per column, all groups, per {report.window} window "
                 f"(x: drifted), against {report.reference}", fontsize=9)
    ax.set_ylabel("effect (Jensen-Shannon or Wasserstein)")
    ax.legend(fontsize=7, ncol=2, loc="best")
    fig.autofmt_xdate()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def quality_scale(figures: DistrictFigures, lower_is_better: bool = False):
    """The live metric's fixed colour scale: 0..1 for a share; an error from twice the worst district's to 0."""
    from civicml.geo import Scale

    worst = (max(figures.quality.values(), default=0.0) * 2 or 1.0) if lower_is_better else 0.0
    return Scale(figures.metric, worst, 0.0 if lower_is_better else 1.0, "live, latest judged window",
                 "estimated from confidence where no labels came: " + (", ".join(figures.estimated) or "none"))


def map_charts(figures: DistrictFigures, boundaries, folder: Path, lower_is_better: bool = False) -> list[str]:
    """``map_quality.png`` and ``map_drift.png`` on the use case's districts (none without boundaries)."""
    if not boundaries:
        return []
    from civicml.geo import Scale, map_png

    written = []
    if figures.quality:
        scale = quality_scale(figures, lower_is_better)
        map_png(boundaries, folder / "map_quality.png", scale=scale, values=figures.quality, rows=figures.rows,
                min_rows=figures.min_rows, title=f"Live {figures.metric} by district")
        written.append("map_quality.png")
    if figures.drift:
        scale = Scale("share of columns drifted", 1.0, 0.0, "", f"window {figures.drift_window}")
        map_png(boundaries, folder / "map_drift.png", scale=scale, values=figures.drift,
                title=f"Drift by district, window {figures.drift_window}")
        written.append("map_drift.png")
    return written


def write_artifacts(report: MonitorReport, folder: Path, metric: str = "accuracy", boundaries=None,
                    lower_is_better: bool = False) -> list[str]:
    """Every file of a monitoring run into ``folder``; the names written."""
    figures = district_figures(report, metric)
    (folder / "report.json").write_text(json.dumps(report.to_dict(), default=str))
    (folder / "districts.json").write_text(json.dumps({**figures.to_dict(),
                                                       "scale": quality_scale(figures, lower_is_better).to_dict()}))
    written = ["report.json", "districts.json"]
    written += [p.name for p in (quality_chart(report, folder / "quality.png", metric),
                                 drift_chart(report, folder / "drift.png")) if p is not None]
    return written + map_charts(figures, boundaries, folder, lower_is_better)


def log_report(report: MonitorReport, settings, metric: str = "accuracy", boundaries=None,
               lower_is_better: bool = False) -> str:
    """Log ``report`` as a run of the ``monitoring`` experiment (see the module's docstring); its run id."""
    from mlflow.entities import Metric, Param

    from civicml.tracking import experiment_id, fluent

    with fluent(settings) as client, tempfile.TemporaryDirectory() as tmp:
        run = client.create_run(experiment_id(settings, EXPERIMENT),
                                run_name=f"monitor {report.model} ({report.window})")
        run_id = run.info.run_id
        try:
            write_artifacts(report, Path(tmp), metric, boundaries, lower_is_better)
            client.log_artifacts(run_id, tmp)
            params = {"model": report.model or "", "window": report.window, "reference": report.reference[:500],
                      "metric": metric}
            figures = {"records": report.records, "labelled": report.labelled, "alerts": len(report.alerts),
                       "drifting": len(report.drifting), "windows": len(report.windows)}
            client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()],
                             metrics=[Metric(k, float(v), 0, 0) for k, v in figures.items()])
        except BaseException:
            client.set_terminated(run_id, "FAILED")
            raise
        client.set_terminated(run_id, "FINISHED")
    return run_id


def latest_run(model: str, settings):
    """The newest finished monitoring run of ``model`` (an MLflow ``Run``), or None."""
    from civicml.tracking import tracking_client

    client = tracking_client(settings)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return None
    quoted = model.replace("'", "\\'")
    runs = client.search_runs([experiment.experiment_id], filter_string=f"params.model = '{quoted}' and "
                                                                        f"attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


__all__ = ["CHARTS", "DistrictFigures", "EXPERIMENT", "district_figures", "drift_chart", "latest_run",
           "log_report", "map_charts", "quality_chart", "quality_scale", "write_artifacts"]
