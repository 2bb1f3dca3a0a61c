"""What a model page leads with: what the model does and for whom, how good it is in plain words beside a
trivial baseline, and which version is live, since when and why.

Everything comes from what the registry stores: the use case the version records (its description), the
version's model card (:func:`registry.card.read`: intended use, limitations, figures and the trivial
baseline on the card's held-out rows), the latest gate results and the audit trail.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from typing import Any

from app.console import words
from civicml.errors import CivicMLError
from civicml.tags import TAG_USE_CASE

NOUNS = {"service_requests": "requests", "street_scenes": "photos", "traffic_flow": "sensor hours"}


@dataclass
class Figure:
    where: str  # "on 500 held-out requests"
    words: str  # "right 97 times in 100"
    technical: str  # "accuracy 0.9714"


@dataclass
class Overview:
    description: str = ""
    use_case: str = ""
    intended_use: str = ""
    out_of_scope: str = ""
    limitations: list[str] = field(default_factory=list)
    card_version: str | None = None
    figures: list[Figure] = field(default_factory=list)
    baseline: Figure | None = None
    per_group: dict[str, dict[str, dict]] = field(default_factory=dict)
    unit: str = ""
    live: dict[str, Any] | None = None  # version, since, who, checks [(words, title, passed)], reason
    waiting: str = ""  # when nothing is live: which version waits, as what


def _use_case(tags: dict[str, str]):
    from projects import get_use_case

    name = tags.get(TAG_USE_CASE)
    if not name:
        return None
    try:
        return get_use_case(name)
    except Exception:  # noqa: BLE001 - a page without the use case's words is still a page
        return None


def describe(name: str, settings) -> str:
    """What the newest version of ``name`` does: its use case's description, or ""."""
    from registry import versions

    try:
        found = versions(name, settings=settings)
    except CivicMLError:
        return ""
    use_case = _use_case(dict(found[-1].tags)) if found else None
    return str(getattr(use_case, "description", "") or "")


def target_unit(use_case) -> str:
    """The target's unit: declared in a use-case file (``columns``), else the built-in column's."""
    if use_case is None:
        return ""
    spec = getattr(use_case, "spec", None)
    target = getattr(use_case, "target", None) or getattr(spec, "target", None) or \
        vars(sys.modules.get(type(use_case).__module__, object)).get("TARGET")
    declared = (getattr(spec, "columns", None) or {}).get(target) or {}
    return str(declared.get("unit") or words.COLUMNS.get(str(target), ("", ""))[1])


def _rows_in(source: str) -> str:
    found = re.search(r"\((\d+) rows", source or "")
    return found[1] if found else ""


def _gate_baseline(gates: list[dict]) -> tuple[str, float] | None:
    for g in gates:
        found = re.search(r"vs baseline ([-\d.]+).*\(the baseline: (.+?), learnt", str(g.get("detail", "")))
        if found:
            return found[2], float(found[1])
    return None


def build(name: str, shown: list[dict], trail: list[dict], settings) -> Overview:
    """``shown``: :func:`registry.show` (oldest first); ``trail``: :func:`registry.audit` (oldest first)."""
    from registry import model_card, versions
    from registry import read_card as read

    out = Overview()
    if not shown:
        return out
    champion = next((v for v in shown if "champion" in v["aliases"]), None)
    described = champion or shown[-1]
    tags = next((dict(v.tags) for v in versions(name, settings=settings) if v.version == described["version"]), {})
    use_case = _use_case(tags)
    if use_case is not None:
        out.description, out.use_case = str(getattr(use_case, "description", "") or ""), use_case.name
    out.unit = target_unit(use_case)
    noun = NOUNS.get(out.use_case, "cases")
    card: dict[str, Any] = {}
    try:
        card = read(model_card(name, described["version"], settings=settings))
        out.card_version = described["version"]
    except CivicMLError:
        pass
    out.intended_use, out.limitations = card.get("intended_use", ""), card.get("limitations", [])
    out.out_of_scope = card.get("out_of_scope", "")
    out.per_group = card.get("per_group", {})
    metrics = card.get("metrics") or {}
    headline = "accuracy" if "accuracy" in metrics else "mae" if "mae" in metrics else next(iter(metrics), None)
    rows = _rows_in(card.get("source", ""))
    if headline:
        where = f"on {rows + ' ' if rows else ''}held-out {noun}"
        out.figures.append(Figure(where, words.quality(headline, metrics[headline], out.unit),
                                  f"{headline} {metrics[headline]:.4f} ({card.get('source')})"))
    gates = (described.get("last_gates") or {}).get("gates") or []
    also = card.get("also") or [
        {"metric": str(g["gate"]).split(" ")[0], "value": g["figure"], "what": "wording it never saw", "rows": "?"}
        for g in gates if "unseen phrasings" in str(g.get("gate")) and g.get("figure") is not None]
    for a in also:
        out.figures.append(Figure(f"on {a['what']}" + (f" ({a['rows']} {noun})" if a.get("rows") not in (None, "?")
                                                          else ""),
                                  words.quality(a["metric"], a["value"], out.unit), f"{a['metric']} {a['value']:.4f}"))
    base = card.get("baseline") or {}
    if headline and headline in base:
        out.baseline = Figure(base["what"], words.quality(headline, base[headline], out.unit),
                              f"{headline} {base[headline]:.4f} on the same rows")
    elif (found := _gate_baseline(gates)) is not None:
        gate_metric = next((str(g["gate"]).split(" ")[0] for g in gates if str(g.get("gate")).endswith("vs baseline")),
                           headline or "")
        out.baseline = Figure(found[0], words.quality(gate_metric, found[1], out.unit),
                              f"{gate_metric} {found[1]:.4f} (the promotion's gate)")
    out.live, out.waiting = _live(shown, trail, champion)
    return out


def _live(shown: list[dict], trail: list[dict], champion: dict | None) -> tuple[dict | None, str]:
    if champion is None:
        waiting = [f"version {v['version']} is the {', '.join(v['aliases'])}" for v in reversed(shown) if v["aliases"]]
        return None, "No version is live yet" + (f"; {waiting[0]}, waiting for a release manager to promote it"
                                                  if waiting else "") + "."
    version = champion["version"]
    moved = next((r for r in reversed(trail) if r.get("alias") == "champion" and str(r.get("to")) == version
                  and r.get("action") in ("promote", "rollback", "alias")), None)
    live: dict[str, Any] = {"version": version, "since": None, "who": None, "checks": [], "why": ""}
    if moved is None:
        live["why"] = "The audit trail does not say how it became live."
        return live, ""
    live["since"], live["who"] = str(moved.get("when", ""))[:16].replace("T", " "), moved.get("who")
    if moved["action"] == "promote":
        live["checks"] = [(words.gate(g.get("gate", "")), g.get("gate", ""), bool(g.get("passed")))
                          for g in moved.get("gates", [])]
        live["why"] = (f"Promoted from version {moved.get('from')}" if moved.get("from") else "Promoted") + \
            f"; all {len(live['checks'])} release checks passed" + (
                f" (forced past its input check: {moved.get('reason')})" if moved.get("forced") else "") + "."
    elif moved["action"] == "rollback":
        live["why"] = f"Rolled back from version {moved.get('from')}" + (
            f": {moved.get('reason')}" if moved.get("reason") else "") + "."
    else:
        live["why"] = "Pointed at directly" + (f": {moved.get('reason')}" if moved.get("reason") else "") + "."
    return live, ""


__all__ = ["Figure", "Overview", "build", "describe", "target_unit"]
