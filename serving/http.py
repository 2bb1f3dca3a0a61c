"""The HTTP layer: MLflow's scoring protocol and the Open Inference Protocol V2 over FastAPI, in MLServer's
shape: routes only translate to and from one data plane.

Each inference route calls :meth:`serving.inference.DataPlane.infer` with its protocol
(serving/protocols.py: MLflow ``/invocations`` or V2 ``/v2/models/{name}[/versions/{v}]/infer``), which
reads the body within the server's :class:`Limits` (413 before any parsing), decodes it with the
protocol's codec (serving/codecs.py), checks it with the model's compiled validator and batches it
(serving/batching.py). Errors become statuses in one place, serving/errors.py; the caller's token is
checked by serving/auth.py (team mode); ``/openapi.json`` is built by serving/openapi.py.

Recording and late labels are given by the caller (the top floor builds them from ``monitoring``, which
serving never imports): ``recorder`` (``record(mapping)`` per answered row, ``close()`` at shutdown; see
serving/inference.py) and ``feedback``, a callable that takes ``[(answer_id, outcome), ...]`` and returns
the counts (a mapping, or an object with ``to_dict()``); ``POST /feedback`` calls it.
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, Response

from civicml.errors import CivicMLError, InvalidInput, NotFound, PermissionDenied
from serving import errors
from serving.auth import Unauthenticated, bearer_token
from serving.dataplane import MAX_ROWS
from serving.endpoint import Endpoint
from serving.errors import Json, mlflow_error, status_of
from serving.explain_http import router as explain_router
from serving.inference import DataPlane
from serving.limits import MAX_BODY_BYTES, Limits, read_body
from serving.metrics import Metrics
from serving.openapi import MLFLOW_BODY, MLFLOW_ERR, V2_BODY, V2_ERR, error_responses, live_openapi
from serving.protocols import MLFLOW, V2, v2_metadata

log = logging.getLogger("civicml.serving")


def create_app(endpoints: Endpoint | list[Endpoint], follow: bool = True, limits: Limits | None = None,
               recorder=None, feedback=None) -> FastAPI:
    """One server for one or several endpoints; ``/invocations`` answers with the first one. ``recorder``:
    each answered row is recorded to it (closed at shutdown); ``feedback``: what ``POST /feedback`` calls
    (None: 404, this server records no answers)."""
    endpoints = [endpoints] if isinstance(endpoints, Endpoint) else list(endpoints)
    plane = DataPlane(endpoints, Metrics(), limits or Limits(), recorder=recorder)
    admission = plane.limits.serving()
    for endpoint in endpoints:  # the batchers are built at load (lifespan), after this
        if limits is not None or endpoint.limits is None:
            endpoint.limits = admission
        endpoint.on_event = plane.metrics.on_event
        endpoint.in_flight = plane.in_flight
    title = ", ".join(f"{e.model_name}@{e.alias}" for e in endpoints)
    app = ServingApp(plane, title=f"CivicML: {title}", lifespan=_lifespan(plane, follow),
                     description="MLflow scoring protocol (/invocations) and Open Inference Protocol V2 (/v2).")
    app.state.endpoints = plane.by_key
    app.state.metrics = plane.metrics
    errors.install(app)
    err_mlflow = error_responses(MLFLOW_ERR, plane.guard.team)
    _health_routes(app, plane)
    _mlflow_routes(app, plane, err_mlflow)
    _v2_health_routes(app, plane)
    _v2_model_routes(app, plane, error_responses(V2_ERR, plane.guard.team))
    _metrics_route(app, plane)
    _feedback_route(app, plane, feedback, err_mlflow)
    app.include_router(explain_router(endpoints, plane.guard, limits=plane.limits,  # POST /explain,
                                      count=lambda e, served, status, started:  # /models/{name}/explain
                                      plane.count(e, served, "explain", status, started)))
    live_openapi(app, endpoints, err_mlflow)
    return app


class ServingApp(FastAPI):
    """The server's FastAPI app, whose inference routes are answered before the framework's machinery.

    ``POST /invocations``, ``/models/{name}/invocations``, ``/v2/models/{name}/infer`` and
    ``/v2/models/{name}/versions/{version}/infer`` go straight to :meth:`DataPlane.infer`, which already
    reads the body, answers every error in its protocol's shape and counts it: FastAPI's middleware,
    routing and dependency solving cost about as much per request as the whole data plane and add nothing
    to these routes. Every other request (and any other method or path) is FastAPI's; these routes stay
    registered there too, for the OpenAPI document. So a check on inference requests belongs in the data
    plane (its guard, serving/auth.py), never in a FastAPI dependency or middleware, which they skip."""

    def __init__(self, plane: DataPlane, **fastapi_options):
        super().__init__(**fastapi_options)
        self.plane = plane

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            route = inference_route(scope["path"])
            if route is not None:
                plane = self.plane
                request = Request(scope, receive) if plane.guard.team else _Request(scope, receive)
                response = await plane.infer(route[0], request, route[1], route[2])
                cycle = getattr(send, "__self__", None)
                if cycle.__class__ is _CYCLE:
                    await _send_in_one_write(cycle, send, response)
                    return
                await send({"type": "http.response.start", "status": response.status_code,
                            "headers": response.raw_headers})
                await send({"type": "http.response.body", "body": response.body})
                return
        await super().__call__(scope, receive, send)


try:  # uvicorn's httptools request cycle, whose two writes of an answer _send_in_one_write joins
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle as _CYCLE
except ImportError:  # pragma: no cover - httptools not installed: another cycle, sent as any ASGI server takes it
    _CYCLE = None


class _HeldWrites:
    """A request cycle's transport while uvicorn writes an answer's status line and headers, then its body:
    the writes are held and go to the socket as one (:meth:`flush`). Everything else is the transport's."""

    __slots__ = ("transport", "held")

    def __init__(self, transport):
        self.transport, self.held = transport, []

    def write(self, data) -> None:
        self.held.append(data)

    def flush(self) -> None:
        held, self.held = self.held, []
        if len(held) == 1:
            self.transport.write(held[0])
        elif held:
            self.transport.writelines(held)  # uvloop: one writev

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def __getattr__(self, name):
        return getattr(self.transport, name)


async def _send_in_one_write(cycle, send, response) -> None:
    """An answer sent through uvicorn's own ``send`` (its checks, default headers, keep-alive and completion as
    ever) with its status line, headers and body in one write to the socket instead of two: the same bytes,
    one system call and one TCP segment fewer a request. Under wrk at c32 (constant model) uvicorn's sends cost
    ~13.5 -> ~11.7 µs CPU a request, the server ~54 -> ~49 µs (one side-by-side run, 3 rounds)."""
    transport = cycle.transport
    held = cycle.transport = _HeldWrites(transport)
    try:
        await send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})
    finally:
        if cycle.transport is held:
            cycle.transport = transport
        held.flush()


class _Request:
    """What the data plane reads of an inference request outside team mode: its headers (:class:`_Headers`)
    and ``receive``; a starlette :class:`Request` (and its :class:`~starlette.datastructures.Headers`) built
    for each of them cost about as much as reading the body. Team mode's guard reads the whole Request."""

    __slots__ = ("scope", "receive", "_headers")

    def __init__(self, scope, receive):
        self.scope, self.receive, self._headers = scope, receive, None

    @property
    def headers(self) -> "_Headers":
        if self._headers is None:
            self._headers = _Headers(self.scope["headers"])
        return self._headers


_HEADER_KEYS: dict[str, bytes] = {}  # header names asked for -> as ASGI gives them (lower case, latin-1)


class _Headers:
    """``get(name)`` of a request's raw ASGI headers as starlette's ``Headers`` answers it: the first value of
    that name (case-insensitive; ASGI gives names in lower case), decoded as latin-1; ``default`` if none."""

    __slots__ = ("raw",)

    def __init__(self, raw):
        self.raw = raw

    def get(self, name: str, default=None):
        key = _HEADER_KEYS.get(name)
        if key is None:
            key = name.lower().encode("latin-1")
            if len(_HEADER_KEYS) < 64:
                _HEADER_KEYS[name] = key
        for header, value in self.raw:
            if header == key:
                return value.decode("latin-1")
        return default

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: str) -> bool:
        return self.get(name) is not None


def inference_route(path: str):
    """``(protocol, model name, version)`` of an inference route's path (as FastAPI's routes above would
    match it: each ``{name}`` one non-empty segment), or None."""
    if path == "/invocations":
        return MLFLOW, None, None
    parts = path.split("/")
    count = len(parts)
    if count == 4 and parts[1] == "models" and parts[3] == "invocations" and parts[2]:
        return MLFLOW, parts[2], None
    if count < 5 or parts[1] != "v2" or parts[2] != "models" or parts[-1] != "infer" or not parts[3]:
        return None
    if count == 5:
        return V2, parts[3], None
    if count == 7 and parts[4] == "versions" and parts[5]:
        return V2, parts[3], parts[5]
    return None


def _lifespan(plane: DataPlane, follow: bool):
    @asynccontextmanager
    async def lifespan(app):
        for endpoint in plane.endpoints:  # load and warm up before the server reports ready
            await _start(endpoint)
            if follow:
                endpoint.follow()
        yield
        for endpoint in plane.endpoints:
            endpoint.close()
        plane.close()  # the recorder writes what it has queued
        plane.guard.close()  # refused requests still counted go to the audit trail

    return lifespan


async def _start(endpoint: Endpoint) -> None:
    """Load an endpoint's version and its roll-out; a failure leaves it unready, saying why in /health."""
    try:
        await run_in_threadpool(endpoint.load)
    except CivicMLError as err:  # start anyway: /health says why it is not ready
        endpoint.last_error = str(err)
        log.error("endpoint %s not ready: %s", endpoint.key, err)
        return
    try:
        await run_in_threadpool(endpoint.refresh_rollout)
    except Exception as err:  # serve the champion alone; /health says why
        endpoint.last_error = f"roll-out not loaded: {type(err).__name__}: {err}"


def _health_routes(app: FastAPI, plane: DataPlane) -> None:
    endpoints, default = plane.endpoints, plane.default

    @app.get("/ping")
    def ping():
        if not all(e.ready for e in endpoints):
            return Json({"status": "loading", "error": default.last_error}, status_code=503)
        return Json({"status": "ok"})

    @app.get("/health")
    def health():
        models = [_health_of(e) for e in endpoints]
        ok = all(e.ready for e in endpoints)
        body = {"status": "ok" if ok else "unavailable", **models[0], "models": models, "worker": os.getpid(),
                "auth": "team (service token required)" if plane.guard.team
                else "single-user (no token; loopback only)"}
        return Json(body, status_code=200 if ok else 503)

    @app.get("/version")
    def version():
        return Json({"model": default.served.to_dict() if default.served else None})


def _health_of(e: Endpoint) -> dict:
    return {"model": e.served.to_dict() if e.served else None,
            "follows": f"models:/{e.model_name}@{e.alias}" + (f" ({e.variant} variant)" if e.variant else ""),
            "last_error": e.last_error,
            "rollout": ({"version": e.rollout.version, "weight": e.rollout.weight, "mode": e.rollout.mode}
                        if e.rollout else None),
            "shadow_agreement": e.shadow_counts if e.shadow_counts["total"] else None,
            "automatic_rollback": e.rolled_back, "compute": e.compute}


def _mlflow_routes(app: FastAPI, plane: DataPlane, responses: dict) -> None:
    """MLflow's scoring protocol: ``/invocations`` (the first model) and ``/models/{name}/invocations``."""

    @app.post("/invocations", openapi_extra={"requestBody": MLFLOW_BODY}, responses=responses)
    async def invocations(request: Request):
        return await plane.infer(MLFLOW, request)

    @app.post("/models/{name}/invocations", openapi_extra={"requestBody": MLFLOW_BODY}, responses=responses)
    async def model_invocations(name: str, request: Request):
        return await plane.infer(MLFLOW, request, name)


def _v2_health_routes(app: FastAPI, plane: DataPlane) -> None:
    @app.get("/v2")
    def v2_server():
        return Json({"name": "civicml", "version": _version(), "extensions": []})

    @app.get("/v2/health/live")
    def v2_live():
        return Json({"live": True})

    @app.get("/v2/health/ready")
    def v2_ready():
        ready = all(e.ready for e in plane.endpoints)
        return Json({"ready": ready}, status_code=200 if ready else 503)


def _v2_model_routes(app: FastAPI, plane: DataPlane, responses: dict) -> None:
    """The Open Inference Protocol V2's model routes; errors answered by serving/errors.py."""

    @app.get("/v2/models/{name}", responses=responses)
    def v2_model(name: str):
        return Json(v2_metadata(plane.endpoint(name)))

    @app.get("/v2/models/{name}/versions/{version}", responses=responses)
    def v2_model_version(name: str, version: str):
        endpoint = plane.endpoint(name)
        plane.check_version(endpoint, version)
        return Json(v2_metadata(endpoint))

    @app.get("/v2/models/{name}/ready", responses=responses)
    def v2_model_ready(name: str):
        endpoint = plane.endpoint(name)
        return Json({"name": name, "ready": endpoint.ready}, status_code=200 if endpoint.ready else 503)

    @app.get("/v2/models/{name}/versions/{version}/ready", responses=responses)
    def v2_model_version_ready(name: str, version: str):
        endpoint = plane.endpoint(name)
        plane.check_version(endpoint, version)
        return Json({"name": name, "ready": endpoint.ready})

    @app.post("/v2/models/{name}/infer", openapi_extra={"requestBody": V2_BODY}, responses=responses)
    async def v2_infer(name: str, request: Request):
        return await plane.infer(V2, request, name)

    @app.post("/v2/models/{name}/versions/{version}/infer", openapi_extra={"requestBody": V2_BODY},
              responses=responses)
    async def v2_infer_version(name: str, version: str, request: Request):
        return await plane.infer(V2, request, name, version)


def _metrics_route(app: FastAPI, plane: DataPlane) -> None:
    @app.get("/metrics", response_class=PlainTextResponse)  # Prometheus text format
    def prometheus():
        return Response(plane.metrics.render(), media_type=plane.metrics.content_type)


_FEEDBACK_BODY = {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["outcomes"], "properties": {"outcomes": {
        "type": "array", "minItems": 1, "items": {"type": "object", "required": ["answer_id", "outcome"],
                                                  "properties": {"answer_id": {"type": "string"}, "outcome": {}}}}}}}}}


def _feedback_route(app: FastAPI, plane: DataPlane, feedback, responses: dict) -> None:
    """``POST /feedback``: ``{"outcomes": [{"answer_id": ..., "outcome": ...}, ...]}`` -> the counts joined,
    already known, conflicting and unknown (the ids named). In team mode the caller's token must hold the
    ``feedback`` action (``service`` or ``labeller``, civicml/access.py): 401 without a known token, 403
    with another role, counted for the audit trail as inference refusals are."""
    from civicml.access import AccessFile

    access = AccessFile(plane.guard.settings) if plane.guard.team else None

    # 404 when the server records no answers; 400 for a body that is not outcomes; 413 over the body limit
    @app.post("/feedback", openapi_extra={"requestBody": _FEEDBACK_BODY}, responses=responses)
    async def post_feedback(request: Request):
        try:
            _check_feedback_caller(plane, access, request)
            if feedback is None:
                raise NotFound("this server records no answers (start it with --record all or sample=R)")
            pairs = feedback_pairs(await read_body(request, plane.limits.max_body_bytes))
            result = await run_in_threadpool(feedback, pairs)
        except Exception as err:  # noqa: BLE001 - 4xx with a message; anything else a generic 500, logged
            return mlflow_error(err)
        return Json(result.to_dict() if hasattr(result, "to_dict") else dict(result))


def _check_feedback_caller(plane: DataPlane, access, request: Request) -> None:
    """Team mode: the token's principal may ``feedback``; else :class:`Unauthenticated` or PermissionDenied."""
    if access is None:
        return
    from civicml.access import ACTIONS

    caller = "anonymous"
    try:
        token = bearer_token(request)
        caller = "unknown-token"
        try:
            who = access.caller(token)
        except PermissionDenied as err:
            raise Unauthenticated("authentication failed: " + str(err).removeprefix("permission denied: ")) \
                from None
        caller = who.name
        if not who.may("feedback"):
            raise PermissionDenied(f"permission denied: {who.name} ({'+'.join(sorted(who.roles))}) may not hand "
                                   f"in feedback (needs the {' or '.join(sorted(ACTIONS['feedback']))} role)")
    except PermissionDenied as err:
        status = 401 if isinstance(err, Unauthenticated) else 403
        plane.guard.refusals.count(plane.default.model_name, caller, request.url.path, status, str(err))
        raise


def feedback_pairs(body: bytes) -> list[tuple[str, object]]:
    """A feedback body's ``(answer_id, outcome)`` pairs, or one :class:`InvalidInput` line saying what is wrong."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput('the feedback body must be JSON: {"outcomes": [{"answer_id": ..., "outcome": ...}]}') \
            from None
    outcomes = doc.get("outcomes") if isinstance(doc, dict) else None
    if not isinstance(outcomes, list) or not outcomes:
        raise InvalidInput("the feedback body needs 'outcomes': a non-empty list of {answer_id, outcome} objects")
    pairs = []
    for i, item in enumerate(outcomes):
        if not isinstance(item, dict) or not isinstance(item.get("answer_id"), str):
            raise InvalidInput(f"outcomes[{i}] must be an object with a string 'answer_id'")
        outcome = item.get("outcome")
        if outcome is None or isinstance(outcome, (dict, list)) or (isinstance(outcome, str) and not outcome.strip()):
            raise InvalidInput(f"outcomes[{i}] needs an 'outcome': a label or a number")
        pairs.append((item["answer_id"], outcome))
    return pairs


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("civicml")
    except Exception:
        return "dev"


__all__ = ["Limits", "MAX_BODY_BYTES", "MAX_ROWS", "create_app", "read_body", "status_of"]
