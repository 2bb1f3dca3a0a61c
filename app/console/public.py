"""The public page: which models answer the city's residents, what each does, how good it is (per district
where its card says), since when, and how often people overrode its answers. Read-only, without a token.

``/public`` lists the live models (those with a ``champion``); ``/public/models/{name}`` is one model's record.
Everything shown comes from the registry (the champion's model card, the audit trail's champion moves), the
record store (counts of people's reviews, :func:`monitoring.review_counts`) and the use case (its description;
the objection procedure from a ``transparency.yaml`` beside the use case, where there is one).

What it never shows, whoever asks: tokens, who did what (principal names: roles at most), reasons people wrote,
recorded inputs or training rows, the card's data sources and file paths of the home (any absolute path in a
text shown is cut to its last part). The console reads with its own settings (the embedded home, or its
``CIVICML_TOKEN`` in team mode), never with a visitor's cookie, so the page is the same for everyone; when the
registry cannot be read it says so without the reason (which may name a principal).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse
from jinja2 import Environment, PackageLoader, select_autoescape

from civicml.errors import CivicMLError
from civicml.settings import Settings
from civicml.tags import TAG_USE_CASE

log = logging.getLogger("civicml.console")
CHAMPION = "champion"
MOVES = ("promote", "rollback", "alias")  # audited events that can move the champion
SMALL_GROUP = 30  # rows: a district's figure on fewer is flagged (as the model card does)
_PATH = re.compile(r"(?:[A-Za-z]:\\|(?<![\w.:/])/)(?:[^\s`'\"()<>,;|\\/]+[\\/])+([^\s`'\"()<>,;|\\/]*)")


@dataclass
class Change:
    when: str  # "2026-12-04 16:05" (UTC)
    what: str  # "promoted from version 1", "rolled back from version 3", "pointed at directly"
    version: str


@dataclass
class PublicModel:
    name: str
    version: str
    description: str = ""
    intended_use: str = ""
    out_of_scope: str = ""
    limitations: list[str] = field(default_factory=list)
    figures: list[Any] = field(default_factory=list)  # overview.Figure
    baseline: Any = None
    per_group: dict[str, dict[str, dict]] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)  # newest first
    checks: int = 0  # release checks the live version passed when promoted
    reviews: list[dict[str, Any]] = field(default_factory=list)  # per version: reviewed, changed
    reviews_by_group: list[dict[str, Any]] = field(default_factory=list)  # the live version's, per group
    objection: str = ""

    @property
    def since(self) -> str:
        return self.changes[0].when if self.changes else ""


def public_text(text: Any) -> str:
    """``text`` with every absolute file path cut to its last part (a use-case file's path in a card, a home)."""
    return _PATH.sub(lambda m: m.group(1) or "-", str(text or ""))


def live_models(settings: Settings) -> list[PublicModel]:
    """Every model with a champion, as the public page shows it."""
    from registry import models

    return [public_model(name, settings) for name, aliases in sorted(models(settings=settings).items())
            if CHAMPION in aliases]


def public_model(name: str, settings: Settings) -> PublicModel | None:
    """One live model's public record, or None when ``name`` has no champion (or is not registered)."""
    from app.console import overview
    from registry import audit, models, show

    if CHAMPION not in (models(settings=settings).get(name) or {}):
        return None
    shown, trail = show(name, settings=settings), audit(name, settings=settings)
    about = overview.build(name, shown, trail, settings)
    version = str(about.live["version"]) if about.live else next(v["version"] for v in shown
                                                                if CHAMPION in v["aliases"])
    out = PublicModel(name, version, description=public_text(about.description),
                      intended_use=public_text(about.intended_use), out_of_scope=public_text(about.out_of_scope),
                      limitations=[public_text(x) for x in about.limitations], figures=about.figures,
                      baseline=about.baseline, per_group=about.per_group, changes=_changes(trail),
                      checks=len((about.live or {}).get("checks") or []))
    out.reviews, out.reviews_by_group = _reviews(name, version, settings)
    out.objection = objection_procedure(_use_case_of(name, version, settings))
    return out


def _changes(trail: list[dict]) -> list[Change]:
    """The champion's moves, newest first, without who made them or why (free text)."""
    out = []
    for record in trail:
        if record.get("alias") != CHAMPION or record.get("action") not in MOVES or record.get("to") is None:
            continue
        before = record.get("from")
        what = {"promote": f"promoted from version {before}" if before else "promoted (the first live version)",
                "rollback": f"rolled back from version {before}"}.get(record["action"], "pointed at directly")
        out.append(Change(str(record.get("when", ""))[:16].replace("T", " "), what, str(record["to"])))
    return out[::-1]


def _reviews(name: str, version: str, settings: Settings) -> tuple[list[dict], list[dict]]:
    from monitoring import existing_store, review_counts

    store = None
    try:
        store = existing_store(settings)
        counts = review_counts(store, model=name)
    except Exception:  # noqa: BLE001 - a store that cannot be read: the page without the counts
        log.warning("the public page could not read the review counts of '%s'", name, exc_info=True)
        return [], []
    finally:
        if store is not None:
            store.close()
    per_version = counts.groupby("version")[["reviewed", "changed"]].sum().reset_index()
    per_version = per_version.sort_values("version", key=lambda v: v.astype(int), ascending=False)
    live = counts[counts["version"] == version].sort_values("group")
    return per_version.to_dict("records"), live[["group", "reviewed", "changed"]].to_dict("records")


def _use_case_of(name: str, version: str, settings: Settings):
    from projects import get_use_case
    from registry import versions

    tags = next((dict(v.tags) for v in versions(name, settings=settings) if v.version == version), {})
    try:
        return get_use_case(tags[TAG_USE_CASE]) if tags.get(TAG_USE_CASE) else None
    except Exception:  # noqa: BLE001 - a use case gone: no objection procedure to show
        return None


def use_case_folder(use_case) -> Path | None:
    """The folder a use case lives in: its use-case file's, else its package's."""
    spec_path = getattr(getattr(use_case, "spec", None), "path", None)
    if spec_path:
        return Path(spec_path).parent
    module = sys.modules.get(type(use_case).__module__)
    return Path(module.__file__).parent if getattr(module, "__file__", None) else None


def objection_procedure(use_case) -> str:
    """How a resident objects to an answer: ``objection_procedure`` of the ``transparency.yaml`` beside the use
    case (at its top or one level down; text, or a mapping shown as ``key: value`` lines), else ""."""
    import yaml

    folder = use_case_folder(use_case) if use_case is not None else None
    path = folder / "transparency.yaml" if folder else None
    if path is None or not path.is_file():
        return ""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        log.warning("%s is not readable YAML; the public page shows no objection procedure", path)
        return ""
    found = _find(data, "objection_procedure")
    if isinstance(found, dict):
        found = "\n".join(f"{k}: {v}" for k, v in found.items() if v not in (None, ""))
    elif isinstance(found, list):
        found = "\n".join(str(x) for x in found)
    return public_text(found).strip() if found not in (None, "") else ""


def _principals(trail: list[dict], facts) -> set[str]:
    """The names of the people (principals) the audit trail and the version's lineage record."""
    names = {str(r.get("who")) for r in trail if r.get("who")}
    names |= {str(v) for k, v in (getattr(facts, "lineage", None) or {}).items() if k.endswith("_by") and v}
    return {n for n in names if len(n) > 1}


def _find(data: Any, key: str) -> Any:
    if not isinstance(data, dict):
        return None
    if key in data:
        return data[key]
    return next((v[key] for v in data.values() if isinstance(v, dict) and key in v), None)


def public_router(settings: Settings | None = None) -> APIRouter:
    """``GET /public`` and ``GET /public/models/{name}``: no token, no cookie read, nothing written."""
    from app.console import words

    base = settings or Settings.from_env()
    env = Environment(loader=PackageLoader("app.console", "templates"), autoescape=select_autoescape())
    env.globals.update(words=words, small_group=SMALL_GROUP)
    router = APIRouter()

    def page(request: Request, template: str, status: int = 200, **context) -> HTMLResponse:
        root = str(request.scope.get("root_path") or "").rstrip("/")
        html = env.get_template(template).render(request=request, root=root, **context)
        return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})

    def unavailable(request: Request, err: Exception) -> HTMLResponse:
        log.warning("the public page could not read the registry: %s", err)  # the reason may name a principal
        return page(request, "public_error.html", status=503,
                    message="The public register cannot be read right now. Please try again later.")

    @router.get("/public", response_class=HTMLResponse)
    def public_index(request: Request):
        try:
            found = live_models(base)
        except CivicMLError as err:
            return unavailable(request, err)
        return page(request, "public_index.html", models=found)

    @router.get("/public/models/{name}", response_class=HTMLResponse)
    def public_model_page(request: Request, name: str):
        try:
            found = public_model(name, base)
        except CivicMLError as err:
            return unavailable(request, err)
        if found is None:
            return page(request, "public_error.html", status=404,
                        message=f"No live model called '{name}' is on the public register.")
        return page(request, "public_model.html", m=found)

    @router.get("/public/models/{name}/record.json")
    def public_record(request: Request, name: str):
        """The live version's Eurocities transparency record (``civicml transparency``), file paths cut."""
        from registry import audit, eurocities_record, models, transparency_facts

        try:
            if CHAMPION not in (models(settings=base).get(name) or {}):
                return JSONResponse({"error": f"no live model called '{name}' is on the public register"}, 404)
            facts = transparency_facts(name, settings=base)
            record, people = eurocities_record(facts), _principals(audit(name, settings=base), facts)
        except CivicMLError as err:
            log.warning("the public record of '%s' could not be written: %s", name, err)
            return JSONResponse({"error": "the public register cannot be read right now"}, 503)
        text = public_text(json.dumps(record))
        for who in sorted(people, key=len, reverse=True):  # who promoted or registered: a role's work, unnamed
            text = text.replace(json.dumps(who)[1:-1], "a member of staff")
        return JSONResponse(json.loads(text), headers={"Cache-Control": "no-store"})

    return router


__all__ = ["PublicModel", "live_models", "objection_procedure", "public_model", "public_router", "public_text"]
