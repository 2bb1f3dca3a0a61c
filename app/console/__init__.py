"""The web console for city staff: models, versions, aliases, gates, audit trail, try-it, charts, map.

Plain server-rendered HTML (Jinja2) with a little JavaScript served from this package;
nothing is fetched from the internet. It reads through CivicML's Python API and changes
nothing except through the same role-checked registry functions as the CLI.

Who is acting: in single-user mode, the local user (every role). Once access is
configured, a person signs in with their token (kept in an HttpOnly, SameSite=Strict
cookie) and every registry call is made *with that token*; without one, the console
reads with its own token (``CIVICML_TOKEN``, typically a service token), which can
never promote or roll back. Promote and rollback buttons appear only for callers whose
role allows them, and the registry checks the role again on every call.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape

from civicml.errors import CivicMLError, InvalidInput, NotFound, PermissionDenied
from civicml.settings import Settings
from civicml.tags import TAG_RULES_FIDELITY, TAG_VARIANT, TAG_VARIANT_GATE, TAG_VARIANT_OF

COOKIE = "civicml_token"
_HERE = Path(__file__).parent
_STATUS = ((PermissionDenied, 403), (NotFound, 404), (InvalidInput, 400))


class _Picture:
    """A model that takes one picture tensor (street scenes): loaded for the try-it form's upload."""

    def __init__(self, local):
        import mlflow.pyfunc

        from app.console.images import image_input

        self.local = local
        self.model = mlflow.pyfunc.load_model(str(local.path))
        self.signature = self.model.metadata.signature
        self.shape = image_input(self.signature)  # (height, width, channels_first) or None


class _Explainers:
    """Loaded models for the try-it form, one per (model, version)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._loaded = {}
        self._backgrounds = {}

    def background(self, loaded):
        """The training sample stored with a loaded version (the form's typical values), or None."""
        from serving.explain import stored_background

        key = (loaded.local.version.name, loaded.local.version.version)
        with self._lock:
            if key not in self._backgrounds:
                try:
                    self._backgrounds[key] = stored_background(loaded.local.path)[0]
                except Exception:  # noqa: BLE001 - a form without typical values still works
                    self._backgrounds[key] = None
            return self._backgrounds[key]

    def get(self, name: str, version: str, settings: Settings):
        from registry import resolve
        from serving.explain import ModelExplainer

        local = resolve(name, version, settings=settings)  # checks the caller may predict, every time
        with self._lock:
            key = (name, local.version.version)
            if key not in self._loaded:
                try:
                    self._loaded[key] = ModelExplainer(local, {"name": name, "version": local.version.version})
                except InvalidInput:  # a tensor: a picture model gets the upload form, anything else the message
                    picture = _Picture(local)
                    if picture.shape is None:
                        raise
                    self._loaded[key] = picture
            return self._loaded[key]


def create_console(settings: Settings | None = None, endpoints: list[str] | None = None) -> FastAPI:
    """The console app. ``endpoints``: base URLs of running CivicML endpoints whose ``/metrics`` it shows
    (default ``CIVICML_CONSOLE_ENDPOINTS``). Mounted under a prefix (team mode's server serves it at
    ``/console``), every link and redirect carries the prefix (the ASGI ``root_path``)."""
    from app.console.live import endpoints_from

    base = settings or Settings.from_env()
    watched = endpoints_from(endpoints)
    env = Environment(loader=PackageLoader("app.console", "templates"), autoescape=select_autoescape())
    from app.console import words

    from app.console.tryit import amount

    env.globals.update(words=words, tryit_amount=amount)
    env.filters["zip_pairs"] = lambda values: [(v, v) for v in values]
    explainers = _Explainers()
    app = FastAPI(title="CivicML console", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=_HERE / "static"), name="static")
    from app.console.public import public_router

    app.include_router(public_router(base))  # /public: read-only, no token, the same for every visitor

    def acting(request: Request) -> Settings:
        token = request.cookies.get(COOKIE)
        return dataclasses.replace(base, token=token) if token and base.access_configured else base

    def who(request: Request):
        from civicml.access import caller

        try:
            return caller(acting(request))
        except CivicMLError:
            return None

    def page(request: Request, template: str, status: int = 200, **context) -> HTMLResponse:
        identity = who(request)
        html = env.get_template(template).render(
            request=request, who=identity, team=base.access_configured, root=_root(request),
            may=lambda action: bool(identity and identity.may(action)), **context)
        return HTMLResponse(html, status_code=status)

    def failure(request: Request, err: Exception) -> HTMLResponse:
        status = next((code for kind, code in _STATUS if isinstance(err, kind)), 400)
        return page(request, "error.html", status=status, message=str(err))

    def same_origin(request: Request) -> None:
        from urllib.parse import urlsplit

        origin = request.headers.get("origin")
        own = urlsplit(str(request.base_url))
        if origin and origin.rstrip("/") != f"{own.scheme}://{own.netloc}":
            raise PermissionDenied("permission denied: the form was sent from another site")

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request):
        from registry import models

        from app.console.overview import describe

        try:
            settings = acting(request)
            found = models(settings=settings)
        except CivicMLError as err:
            return failure(request, err)
        return page(request, "index.html", models=found, about={name: describe(name, settings) for name in found})

    @app.get("/models/{name}", response_class=HTMLResponse)
    def model(request: Request, name: str):
        from app.console import overview
        from registry import audit, show

        try:
            settings = acting(request)
            versions = show(name, settings=settings)
            trail = audit(name, settings=settings)
            about = overview.build(name, versions, trail, settings)
        except CivicMLError as err:
            return failure(request, err)
        fidelity, variants = _version_tags(name, settings)
        comparisons = _comparisons(name, versions, settings)
        live = [(figures, figures.for_model(name)) for figures in _read_all(watched)]
        from app.console.watch import live_section

        return page(request, "model.html", name=name, versions=list(reversed(versions)),
                    trail=list(reversed(trail)), fidelity=fidelity, variants=variants, about=about,
                    comparisons=comparisons, live=live, watch=live_section(name, settings, trail),
                    challenger=any("challenger" in v["aliases"] and "champion" not in v["aliases"] for v in versions))

    @app.get("/models/{name}/versions/{version}", response_class=HTMLResponse)
    def version_page(request: Request, name: str, version: str):
        from registry import insight_file

        settings = acting(request)
        try:
            summary = json.loads(insight_file(name, version, "summary.json", settings=settings))
            rules = json.loads(insight_file(name, version, "rules.json", settings=settings))
        except CivicMLError as err:
            return failure(request, err)
        map_svg = _map(name, version, settings, summary)
        return page(request, "version.html", name=name, version=version, summary=summary, rules=rules,
                    map_svg=map_svg)

    @app.get("/models/{name}/versions/{version}/files/{filename}")
    def insight(request: Request, name: str, version: str, filename: str):
        from registry import insight_file

        try:
            data = insight_file(name, version, filename, settings=acting(request))
        except CivicMLError as err:
            return failure(request, err)
        kind = {"png": "image/png", "json": "application/json", "csv": "text/csv", "md": "text/markdown"}
        return Response(data, media_type=kind.get(filename.rsplit(".", 1)[-1], "application/octet-stream"))

    @app.get("/models/{name}/try", response_class=HTMLResponse)
    def try_form(request: Request, name: str, ref: str | None = None):
        try:
            settings = acting(request)
            ref, fields = _form_fields(name, ref, settings, explainers)
        except CivicMLError as err:
            return failure(request, err)
        return page(request, "try.html", name=name, ref=ref, fields=fields, values={}, result=None)

    @app.post("/models/{name}/try", response_class=HTMLResponse)
    async def try_submit(request: Request, name: str):
        from app.console import tryit

        upload = None
        fields: list[dict] = []
        try:
            upload, form = await _upload_or_form(request)
        except CivicMLError as err:
            return failure(request, err)
        ref = str(form.pop("ref", "") or "") or None
        try:
            settings = acting(request)
            ref, fields = _form_fields(name, ref, settings, explainers)
            if fields and fields[0]["kind"] == "image":
                return _try_picture(request, name, ref, fields, upload, settings)
            explainer = explainers.get(name, _version_of(name, ref, settings), settings)
            row, shown = tryit.row_of(fields, form, _column_kinds(explainer))
            result = explainer.explain([row])[0].to_dict(8)
        except CivicMLError as err:
            if not fields:
                return failure(request, err)
            status = next((code for kind, code in _STATUS if isinstance(err, kind)), 400)
            return page(request, "try.html", status=status, name=name, ref=ref, fields=fields, values=form,
                        result=None, error=str(err))
        result["confidence_shown"] = _confidence(name, explainer, row, result, settings)
        result["unit"] = _target_unit(explainer)
        result["columns"] = (explainer.local.metadata or {}).get("columns") or {}
        map_svg = _map(name, result["model"]["version"], settings, None, highlight=row.get("district"))
        return page(request, "try.html", name=name, ref=ref, fields=fields, values=shown, result=result,
                    map_svg=map_svg)

    def _try_picture(request: Request, name: str, ref: str, fields: list[dict], upload, settings) -> HTMLResponse:
        from app.console.images import explain_picture, preview, read_upload

        field = fields[0]
        picture = read_upload(upload or b"", field["height"], field["width"])  # InvalidInput: the form again
        version = _version_of(name, ref, settings)
        loaded = explainers.get(name, version, settings)
        result = explain_picture(loaded.model, picture, field["channels_first"], name, loaded.local.version.version)
        return page(request, "try.html", name=name, ref=ref, fields=fields, values={}, result=result,
                    picture=preview(picture))

    @app.get("/endpoints", response_class=HTMLResponse)
    def endpoints_page(request: Request):
        from civicml.access import require

        try:
            require(acting(request), "read")
        except CivicMLError as err:
            return failure(request, err)
        return page(request, "endpoints.html", endpoints=_read_all(watched))

    @app.post("/models/{name}/promote")
    def promote_action(request: Request, name: str):
        try:
            same_origin(request)
            settings = acting(request)
            outcome = _promote(name, settings)
        except CivicMLError as err:
            return failure(request, err)
        note = (f"promoted version {outcome.candidate}" if outcome.promoted
                else f"promotion refused: {outcome.reason}")
        return RedirectResponse(f"{_root(request)}/models/{name}?notice={_quote(note)}", status_code=303)

    @app.post("/models/{name}/rollback")
    def rollback_action(request: Request, name: str):
        from registry import rollback

        try:
            same_origin(request)
            old, new = rollback(name, settings=acting(request), reason="from the console")
        except CivicMLError as err:
            return failure(request, err)
        return RedirectResponse(f"{_root(request)}/models/{name}?notice={_quote(f'champion rolled back: {old} -> {new}')}",
                                status_code=303)

    @app.post("/sign-in")
    async def sign_in(request: Request):
        from civicml.access import caller

        token = (await _form(request)).get("token", "")
        try:
            same_origin(request)
            if not token.strip():
                raise InvalidInput("please paste your token")
            identity = caller(dataclasses.replace(base, token=token.strip()))
        except CivicMLError as err:
            return failure(request, err)
        response = RedirectResponse(f"{_root(request)}/?notice={_quote('signed in as ' + identity.name)}",
                                    status_code=303)
        response.set_cookie(COOKIE, token.strip(), httponly=True, samesite="strict")
        return response

    @app.post("/sign-out")
    def sign_out(request: Request):
        response = RedirectResponse(f"{_root(request)}/", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    return app


def _root(request: Request) -> str:
    return str(request.scope.get("root_path") or "").rstrip("/")


def _read_all(urls: list[str]):
    """Every watched endpoint's figures, read side by side (a slow one does not hold up the others)."""
    from concurrent.futures import ThreadPoolExecutor

    from app.console.live import read_endpoint

    if not urls:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(urls))) as pool:
        return list(pool.map(read_endpoint, urls))


def _comparisons(name: str, shown: list[dict], settings: Settings) -> dict[str, list]:
    """Parent version -> its variants beside it (see :func:`app.console.live.variant_rows`)."""
    from app.console.live import variant_rows
    from registry import versions

    by_version = {v["version"]: v for v in shown}
    parents = sorted({v.tags[TAG_VARIANT_OF] for v in versions(name, settings=settings)
                      if TAG_VARIANT in v.tags and TAG_VARIANT_OF in v.tags}, key=int, reverse=True)
    out = {}
    for parent in parents:
        try:
            rows = variant_rows(name, parent, settings, by_version)
        except CivicMLError:  # a parent removed since: its variants stay listed in the versions table
            continue
        if rows:
            out[parent] = rows
    return out


async def _upload_or_form(request: Request) -> tuple[bytes | None, dict[str, str]]:
    """(an uploaded picture or None, the text fields): a multipart form (the picture form) or a plain one."""
    from app.console.images import MAX_UPLOAD_BYTES, multipart_file

    kind = request.headers.get("content-type", "")
    if not kind.startswith("multipart/form-data"):
        return None, await _form(request)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_UPLOAD_BYTES + 100_000:
            raise InvalidInput(f"the upload is over {MAX_UPLOAD_BYTES // 1_000_000} MB")
    return multipart_file(body, kind, "image")


async def _form(request: Request) -> dict[str, str]:
    """An HTML form's fields (application/x-www-form-urlencoded), without a multipart parser."""
    from urllib.parse import parse_qs

    body = (await request.body())[:100_000].decode("utf-8", errors="replace")
    return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}


def _quote(text: str) -> str:
    """A notice for the page the browser is sent to, whole (a refusal's reasons are not cut mid-word)."""
    from urllib.parse import quote

    return quote(text[:4000])


def _version_tags(name: str, settings: Settings) -> tuple[dict[str, str], dict[str, str]]:
    """Per version: rules fidelity, and what variant it is (``int8 of v3, gate passed``)."""
    from registry import versions

    fidelity, variants = {}, {}
    for v in versions(name, settings=settings):
        if TAG_RULES_FIDELITY in v.tags:
            fidelity[v.version] = v.tags[TAG_RULES_FIDELITY]
        if TAG_VARIANT in v.tags:
            gate = v.tags.get(TAG_VARIANT_GATE)
            variants[v.version] = (f"{v.tags[TAG_VARIANT]} of v{v.tags.get(TAG_VARIANT_OF, '?')}"
                                   + (f", gate {gate}" if gate else ""))
    return fidelity, variants


def _version_of(name: str, ref: str, settings: Settings) -> str:
    from registry import version_of

    return version_of(name, ref, settings=settings).version


def _form_fields(name: str, ref: str | None, settings: Settings, explainers) -> tuple[str, list[dict]]:
    """(the alias or version used, one field per input column: name, kind, choices)."""
    from app.console import tryit
    from registry import models

    aliases = models(settings=settings).get(name)
    if aliases is None:
        raise NotFound(f"no registered model '{name}'")
    if ref is None:
        ref = next((a for a in ("champion", "challenger") if a in aliases), None)
        if ref is None:
            from registry import versions

            ref = versions(name, settings=settings)[-1].version
    explainer = explainers.get(name, _version_of(name, ref, settings), settings)
    if isinstance(explainer, _Picture):
        height, width, channels_first = explainer.shape
        return ref, [{"name": "image", "kind": "image", "height": height, "width": width,
                      "channels_first": channels_first}]
    inputs = explainer.signature.inputs if explainer.signature is not None else None
    if inputs is None or inputs.is_tensor_spec():
        raise InvalidInput(f"model '{name}' takes a tensor; the try-it form needs named columns")
    meta = explainer.local.metadata or {}
    return ref, tryit.fields_for(inputs.inputs, meta.get("categories") or {}, explainers.background(explainer),
                                 meta.get("columns") or {})


def _column_kinds(explainer) -> dict[str, str]:
    inputs = explainer.signature.inputs if explainer.signature is not None else None
    return {s.name: str(s.type).removeprefix("DataType.") for s in (inputs.inputs if inputs is not None else [])}


def _target_unit(explainer) -> str:
    from app.console import words

    meta = explainer.local.metadata or {}
    target = meta.get("target")
    declared = (meta.get("columns") or {}).get(target) or {}
    return str(declared.get("unit") or words.COLUMNS.get(str(target), ("", ""))[1])


def _confidence(name: str, explainer, row: dict, result: dict, settings: Settings) -> dict:
    """How sure the answer is (:func:`app.console.tryit.confidence`); {} when nothing can be said."""
    import pandas as pd

    from app.console import tryit
    from registry import insight_file
    from serving.batching import Columns as BatchColumns
    from serving.dataplane import prepare

    try:
        frame = prepare(pd.DataFrame.from_records([row]), None, explainer.signature, explainer.local.metadata).data
        frame = frame.frame() if isinstance(frame, BatchColumns) else frame
        output = explainer.model.predict(frame)
    except Exception:  # noqa: BLE001 - the answer was given; confidence is extra
        return {}
    width = None
    if not isinstance(output, pd.DataFrame) and isinstance(result.get("prediction"), (int, float)):
        try:
            width = tryit.interval_width(insight_file(name, result["model"]["version"], "predicted_vs_actual.csv",
                                                      settings=settings))
        except CivicMLError:
            width = None
    return tryit.confidence(result, output, explainer.model, frame, width)


def _promote(name: str, settings: Settings):
    """Promote the challenger under the model's governing policy and its held-out set, as `civicml promote` does."""
    from civicml.access import require

    require(settings, "promote")  # refuse before any data is generated
    from registry import promote, promotion_inputs

    return promote(name, **promotion_inputs(name, settings).as_kwargs(), settings=settings)


def _map(name: str, version: str, settings: Settings, summary, highlight: str | None = None) -> str | None:
    """The district map as inline SVG, shaded by the version's per-district figure, or None."""
    from civicml.geo import map_svg
    from registry import boundaries_for, insight_file, versions

    try:
        tags = next(v.tags for v in versions(name, settings=settings) if v.version == str(version))
    except (StopIteration, CivicMLError):
        return None
    boundaries = boundaries_for(dict(tags))
    if not boundaries:
        return None
    from civicml.geo import MIN_ROWS, Scale

    values, rows, points, places, label, scale, note, min_rows = {}, {}, [], [], "accuracy", None, "", MIN_ROWS
    try:
        doc = json.loads(insight_file(name, version, "map.json", settings=settings))
        values, rows, label = doc.get("values") or {}, doc.get("rows") or {}, doc.get("metric", label)
        scale = Scale(**doc["scale"]) if doc.get("scale") else None  # older versions: no colours rather than stretched
        note, min_rows = doc.get("points_note", ""), int(doc.get("min_rows", MIN_ROWS))
        points = [(p["lon"], p["lat"], "right" if p["ok"] else "!wrong answer") for p in doc.get("points", [])]
        places = [(p["lon"], p["lat"], p["name"], p[label], p.get("rows")) for p in doc.get("places", [])
                  if label in p][:200]
    except CivicMLError:
        pass
    title = f"District map: {label} of version {version} by district" + (
        f"; the request's district {highlight} is outlined" if highlight else "")
    return map_svg(boundaries, scale=scale, values=values, rows=rows, points=points, title=title,
                   highlight=highlight, places=places, points_note=note, min_rows=min_rows)

__all__ = ["create_console"]
