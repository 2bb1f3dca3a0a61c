"""The model page's Live section: what ``civicml monitor`` last saw of a served model, and its alerts.

Read, never computed here: the newest run of the ``monitoring`` experiment for the model
(:func:`monitoring.latest_run`; its ``report.json``, ``districts.json`` and charts) and the ``alert`` records of
the model's audit trail (:func:`registry.alerts_of`). A model nobody has monitored yet gets a sentence saying
how to start. Nothing here fails the page: a run whose files cannot be read is reported in the section.
"""

from __future__ import annotations

import base64
import json
import tempfile
from pathlib import Path
from typing import Any

from civicml.settings import Settings

WINDOWS = 8  # the latest windows the quality table shows
ALERTS = 20  # the newest alerts listed


def live_section(name: str, settings: Settings, trail: list[dict]) -> dict[str, Any]:
    """What the template ``watch.html`` shows: ``alerts`` (newest first), and from the latest monitoring run
    ``run`` (id, when), ``quality`` (rows per window of every group together), ``drifting``, ``districts``,
    ``charts`` (data URIs) and ``map_svg``; ``problem`` when that run could not be read."""
    from registry import alerts_of

    out: dict[str, Any] = {"alerts": alerts_of(trail)[:ALERTS], "run": None, "problem": None}
    try:
        from monitoring import latest_run

        run = latest_run(name, settings)
        if run is not None:
            out.update(_from_run(name, run, settings))
    except Exception as err:  # noqa: BLE001 - the rest of the page does not depend on it
        out["problem"] = f"the latest monitoring run could not be read ({type(err).__name__})"
    return out


def _from_run(name: str, run, settings: Settings) -> dict[str, Any]:
    from civicml.tracking import tracking_client

    client = tracking_client(settings)
    files: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        listed = {f.path for f in client.list_artifacts(run.info.run_id)}
        for path in ("report.json", "districts.json", "quality.png", "drift.png"):
            if path in listed:
                files[path] = Path(client.download_artifacts(run.info.run_id, path, tmp)).read_bytes()
    report = json.loads(files.get("report.json", b"{}"))
    districts = json.loads(files.get("districts.json", b"{}"))
    return {"run": {"id": run.info.run_id, "when": _when(run.info.start_time), "window": report.get("window"),
                    "records": report.get("records"), "labelled": report.get("labelled"),
                    "reference": report.get("reference")},
            "quality": quality_rows(report), "drifting": report.get("drifting") or [],
            "districts": district_rows(districts), "map_svg": map_of(name, districts, settings),
            "charts": {k: "data:image/png;base64," + base64.b64encode(v).decode()
                       for k, v in files.items() if k.endswith(".png")}}


def _when(millis: int | None) -> str:
    import datetime as dt

    if not millis:
        return "-"
    return dt.datetime.fromtimestamp(millis / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def quality_rows(report: dict) -> list[dict[str, Any]]:
    """Per window (newest first, at most ``WINDOWS``): every group together, live and estimated, per metric."""
    rows: dict[str, dict[str, Any]] = {}
    for cell in report.get("quality") or []:
        if cell.get("group") != "*":
            continue
        row = rows.setdefault(cell["window"], {"window": cell["window"], "live": {}, "estimated": {}, "n": 0})
        row["estimated" if cell.get("estimate") else "live"][cell["metric"]] = cell["value"]
        row["n"] = max(row["n"], int(cell.get("n") or 0))
    return [rows[w] for w in sorted(rows, reverse=True)[:WINDOWS]]


def district_rows(districts: dict) -> list[dict[str, Any]]:
    quality, drift = districts.get("quality") or {}, districts.get("drift") or {}
    estimated = set(districts.get("estimated") or [])
    return [{"district": d, "value": quality.get(d), "rows": (districts.get("rows") or {}).get(d),
             "estimated": d in estimated, "drift": drift.get(d)} for d in sorted(set(quality) | set(drift))]


def map_of(name: str, districts: dict, settings: Settings) -> str | None:
    """The district map (as the version page draws it) coloured by the live metric, or None."""
    if not districts.get("quality"):
        return None
    from civicml.geo import Scale, map_svg
    from registry import boundaries_for, versions

    found = versions(name, settings=settings)
    boundaries = boundaries_for(dict(found[-1].tags)) if found else None
    if not boundaries:
        return None
    metric, values = districts.get("metric", "accuracy"), districts["quality"]
    scale = Scale(**districts["scale"]) if districts.get("scale") else None  # no colours rather than a guess
    return map_svg(boundaries, scale=scale, values=values, rows=districts.get("rows") or {},
                   min_rows=int(districts.get("min_rows") or 30),
                   title=f"Live {metric} by district, from the latest monitoring run")


__all__ = ["live_section"]
