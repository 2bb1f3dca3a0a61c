"""The HTTP layer: MLflow's scoring protocol and the Open Inference Protocol V2 over FastAPI.

Domain errors become HTTP status codes here, in one place. MLflow routes answer errors as
``{"error_code": ..., "message": ...}`` like MLflow's scoring server; V2 routes as ``{"error": ...}``.
Bodies are limited in bytes while they are read (413 before any parsing), then decoded by a codec
(serving/codecs.py), checked by the model's compiled validator and batched (serving/batching.py).

In team mode (access configured) every inference route needs ``Authorization: Bearer <token>``
of a principal with the ``service`` role: 401 without a known token, 403 with another role.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, Response

from civicml.answers import stable_answer, v2_metadata_outputs
from civicml.errors import CivicMLError, IntegrityError, InvalidInput, NotFound, PermissionDenied, Unavailable
from civicml.settings import ServingLimits
from serving.batching import Overloaded, TooCostly
from serving.codecs import MLflowCodec, V2Codec, dumps, v2_datatype
from serving.dataplane import MAX_ROWS, TooLarge, UnsupportedMediaType
from serving.endpoint import Endpoint
from serving.explain import MAX_ROWS as EXPLAIN_MAX_ROWS
from serving.explain_http import router as explain_router
from serving.metrics import Metrics

log = logging.getLogger("civicml.serving")

MAX_BODY_BYTES = 16 * 1024 * 1024
OFF_LOOP_BYTES = 256 * 1024  # bodies at least this large are parsed in a worker thread, not on the event loop


class Unauthenticated(PermissionDenied):
    """No token, or one the access configuration does not know (HTTP 401)."""


_STATUS = [(TooLarge, 413, "REQUEST_TOO_LARGE"), (TooCostly, 413, "REQUEST_TOO_LARGE"),
           (UnsupportedMediaType, 415, "UNSUPPORTED_MEDIA_TYPE"), (Overloaded, 503, "TEMPORARILY_UNAVAILABLE"),
           (InvalidInput, 400, "BAD_REQUEST"), (NotFound, 404, "RESOURCE_DOES_NOT_EXIST"),
           (Unauthenticated, 401, "UNAUTHENTICATED"), (PermissionDenied, 403, "PERMISSION_DENIED"),
           (IntegrityError, 503, "MODEL_INTEGRITY"), (Unavailable, 503, "UNAVAILABLE")]


def status_of(err: Exception) -> tuple[int, str, str]:
    """(HTTP status, MLflow error code, message) for any exception raised while answering."""
    for kind, status, code in _STATUS:
        if isinstance(err, kind):
            return status, code, str(err)
    from starlette.requests import ClientDisconnect

    if isinstance(err, ClientDisconnect):  # the caller went away mid-body: nobody to answer, nothing failed
        return 499, "CLIENT_CLOSED_REQUEST", "the client closed the connection before sending the whole body"
    from mlflow.exceptions import MlflowException

    if isinstance(err, (MlflowException, ValueError, TypeError, KeyError, OverflowError)):
        return 422, "INVALID_INPUT", f"the model rejected the input: {err}"
    log.error("prediction failed", exc_info=err)
    return 500, "INTERNAL_ERROR", "prediction failed"


class Json(Response):
    media_type = "application/json"

    def render(self, content) -> bytes:
        return dumps(content)


def _retry_after(err: Exception) -> dict[str, str] | None:
    """An overloaded server says when to come back (``Retry-After``, seconds)."""
    return {"Retry-After": str(err.retry_after)} if isinstance(err, Overloaded) else None


def _mlflow_error(err: Exception) -> Json:
    status, code, message = status_of(err)
    return Json({"error_code": code, "message": message}, status_code=status, headers=_retry_after(err))


def _v2_error(err: Exception) -> Json:
    status, _, message = status_of(err)
    return Json({"error": message}, status_code=status, headers=_retry_after(err))


@dataclass
class Limits:
    """What one request may be: body bytes (413 while read), and admission control (None: from the
    environment, :class:`civicml.settings.ServingLimits`): its cost (413), the seconds it may wait for the
    model (503 with ``Retry-After``), and the cost of one slice of a large request."""

    max_body_bytes: int = MAX_BODY_BYTES
    max_cost: int | None = None
    deadline_seconds: float | None = None
    slice_cost: int | None = None

    def serving(self) -> ServingLimits:
        base = ServingLimits.from_env()
        return ServingLimits(max_cost=self.max_cost if self.max_cost is not None else base.max_cost,
                             deadline_seconds=(self.deadline_seconds if self.deadline_seconds is not None
                                               else base.deadline_seconds),
                             slice_cost=self.slice_cost if self.slice_cost is not None else base.slice_cost)


async def _decode(decode, body: bytes, *args):
    """A codec's decode: in a worker thread for large bodies, so that parsing never stalls the event loop."""
    if len(body) >= OFF_LOOP_BYTES:
        return await run_in_threadpool(decode, body, *args)
    return decode(body, *args)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes ``limit`` bytes (before any parsing)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise InvalidInput("invalid Content-Length header") from None
        if length > limit:
            raise TooLarge(f"the request body is {length} bytes; the limit is {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class Guard:
    """Team mode: inference needs a service token. Single-user mode: open (the server binds loopback).

    Who a token belongs to (and whether it expired or was revoked) is decided by
    :mod:`civicml.access`, the one home of that rule, on every request: the access file is
    parsed again whenever it changes (:class:`civicml.access.AccessFile`), so a revocation
    or expiry takes effect on the next request. Every 401 and 403 is counted for the
    audit trail (:class:`serving.refusals.RefusalAudit`: one record per caller, route,
    status and minute).
    """

    def __init__(self, settings, model: str | None = None):
        from civicml.access import AccessFile
        from serving.refusals import RefusalAudit

        self.settings = settings
        self.team = settings.access_configured
        self.model = model
        self._access = AccessFile(settings) if self.team else None
        self.refusals = RefusalAudit(settings)

    def check(self, request: Request, model: str | None = None) -> str | None:
        if not self.team:
            return None
        caller = "anonymous"
        try:
            token = self._token(request)
            caller = self._name_of(token)
            return self._identify(token)
        except PermissionDenied as err:
            status = 401 if isinstance(err, Unauthenticated) else 403
            if model or self.model:
                self.refusals.count(model or self.model, caller, request.url.path, status, str(err))
            raise

    def close(self) -> None:
        self.refusals.close()

    @staticmethod
    def _token(request: Request) -> str:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("authentication required: send 'Authorization: Bearer <service token>'")
        return token.strip()

    def _name_of(self, token: str) -> str:
        """The principal a token names (also a revoked or expired one), for the audit trail."""
        from civicml.access import token_digest

        try:
            known = self._access.principals()
        except PermissionDenied:
            return "unknown-token"
        digest = token_digest(token)
        return next((n for n, p in known.items() if p.token_sha256 == digest), "unknown-token")

    def _identify(self, token: str) -> str:
        from civicml.access import SERVICE

        try:
            who = self._access.caller(token)
        except PermissionDenied as err:
            raise Unauthenticated("authentication failed: " + str(err).removeprefix("permission denied: ")) \
                from None
        if SERVICE not in who.roles:
            raise PermissionDenied(f"permission denied: {who.name} ({'+'.join(sorted(who.roles))}) may not call "
                                   f"inference routes (needs the service role)")
        return who.name


_MLFLOW_FORMATS = {"dataframe_split": {"type": "object", "properties": {
                       "columns": {"type": "array", "items": {"type": "string"}},
                       "data": {"type": "array", "items": {"type": "array"}}}},
                   "dataframe_records": {"type": "array", "items": {"type": "object"}},
                   "instances": {"type": "array"},
                   "inputs": {}}


def _one_key(formats: dict, params: dict) -> list[dict]:
    """JSON Schema for 'exactly one of the format keys' (MLflow's rule): one variant per key, the others
    forbidden, ``params`` beside it."""
    return [{"type": "object", "required": [key], "description": f"exactly one of the keys: {key}",
             "properties": {key: schema, "params": params, **{other: False for other in formats if other != key}}}
            for key, schema in formats.items()]


_MLFLOW_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {"description": "exactly one of the keys "
                                                       + ", ".join(_MLFLOW_FORMATS) + " (and optional params)",
                                        "oneOf": _one_key(_MLFLOW_FORMATS, {"type": ["object", "null"]})}},
        "text/csv": {"schema": {"type": "string"}},
    },
}
_V2_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {
        "type": "object", "required": ["inputs"],
        "properties": {"id": {"type": "string"}, "parameters": {"type": "object"},
                       "inputs": {"type": "array", "minItems": 1, "items": {
                           "type": "object", "required": ["name", "shape", "datatype", "data"],
                           "properties": {"name": {"type": "string"},
                                          "shape": {"type": "array", "minItems": 1,
                                                    "items": {"type": "integer", "minimum": 0}},
                                          "datatype": {"type": "string", "enum": [
                                              "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16",
                                              "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"]},
                                          "data": {"type": "array"}}}},
                       "outputs": {"type": "array", "items": {"type": "object"}}}}}},
}
_MLFLOW_ERR = {"content": {"application/json": {"schema": {"type": "object", "properties": {
    "error_code": {"type": "string"}, "message": {"type": "string"}}}}}}
_V2_ERR = {"content": {"application/json": {"schema": {"type": "object", "properties": {
    "error": {"type": "string"}}}}}}


def _errors(body: dict, auth: bool) -> dict:
    codes = {"400": "malformed input or input outside the model's schema", "404": "unknown model or version",
             "413": "body, rows or cost (rows x text length) over the limit", "415": "unsupported content type",
             "422": "the model rejected the input",
             "503": "no model loaded yet, or the request's time budget passed while queued (see Retry-After)"}
    if auth:
        codes.update({"401": "no or unknown token (team mode)", "403": "token without the service role"})
    return {code: {"description": text, **body} for code, text in codes.items()}


def _params_schema(signature) -> dict:
    """``params`` as the model's signature declares them (none declared: an empty object or null)."""
    schema = getattr(signature, "params", None) if signature is not None else None
    names = [spec.name for spec in schema.params] if schema is not None else []
    return {"type": ["object", "null"], "properties": {n: {} for n in names}, "additionalProperties": False}


def _mlflow_body(row: dict | None, max_rows: int = MAX_ROWS, params: dict | None = None) -> dict:
    """The request body of ``/invocations`` for a model whose rows look like ``row`` (JSON Schema), or the
    protocol's general shape when the model has no named columns. Exactly one format key per body."""
    if row is None:
        return _MLFLOW_BODY
    names = list(row["properties"])
    rows = {"type": "array", "minItems": 1, "maxItems": max_rows, "items": row}
    formats = {
        "dataframe_records": rows,
        "dataframe_split": {"type": "object", "required": ["columns", "data"], "properties": {
            "columns": {"const": names, "description": "the column names, in the order of each row's values"},
            "data": {"type": "array", "minItems": 1, "maxItems": max_rows, "items": {
                "type": "array", "prefixItems": [row["properties"][n] for n in names],
                "minItems": len(names), "maxItems": len(names)}}}},
        "instances": rows,
        "inputs": {"type": "object", "required": row["required"],
                   "description": "one list per column (one row shown; columns of equal length give more rows)",
                   "properties": {n: {"type": "array", "minItems": 1, "maxItems": 1, "items": s}
                                  for n, s in row["properties"].items()},
                   "additionalProperties": {"type": "array", "minItems": 1, "maxItems": 1}},  # ignored
    }
    variants = _one_key(formats, params or {"type": ["object", "null"]})
    return {"required": True, "content": {
        "application/json": {"schema": {"oneOf": variants}},
        "text/csv": {"schema": {"type": "string", "pattern": _csv_pattern(row),
                                "description": f"a header line naming the columns ({', '.join(names)}), then one "
                                               f"line per row (the pattern shows a simple subset)"}}}}


def _csv_pattern(row: dict) -> str:
    """A regular expression for CSV bodies of such rows: plain fields, no quoting (a subset of what is read)."""
    import re

    fields = []
    for schema in row["properties"].values():
        if "enum" in schema:
            fields.append("(" + "|".join(re.escape(str(v)) for v in schema["enum"]) + ")")
        elif schema.get("type") == "string":  # capitalised words with a space: never read as NA or a boolean
            fields.append("[A-Z][a-z]{1,12}( [a-z]{1,12}){1,4}")
        elif schema.get("type") == "integer" and schema["maximum"] - schema["minimum"] <= 100:
            fields.append("(" + "|".join(str(v) for v in range(schema["minimum"], schema["maximum"] + 1)) + ")")
        elif schema.get("type") == "integer":
            fields.append("-?[1-9][0-9]{0,8}")
        elif schema.get("type") == "boolean" or "anyOf" in schema:  # a yes/no column takes these too
            fields.append("(True|False)")
        else:
            fields.append("-?[0-9]{1,6}([.][0-9]{1,6})?")
    header = ",".join(re.escape(n) for n in row["properties"])
    return f"^{header}\n({','.join(fields)}\n){{1,20}}$"


def _live_openapi(app: FastAPI, endpoints: list[Endpoint], errors: dict) -> None:
    """``/openapi.json`` says what this server accepts now: the served model names and versions, and each
    model's input rows (columns, types, categories, ranges) as request bodies, so that schema-based
    clients and fuzzers can call it. Rebuilt on each read (versions move with the alias)."""

    def openapi() -> dict:
        import copy

        doc = copy.deepcopy(FastAPI.openapi(app))  # the routes' document, built once by FastAPI
        names = [e.key for e in endpoints]
        versions = sorted({e.served.version for e in endpoints if e.served})
        rows = [e.current.validator.json_schema() if e.current else None for e in endpoints]
        params = [_params_schema(e.current.runtime.signature if e.current else None) for e in endpoints]
        default = _mlflow_body(rows[0], params=params[0])
        same = all(r == rows[0] for r in rows) and all(p == params[0] for p in params)
        shared = default if same else _MLFLOW_BODY
        for path, operations in doc.get("paths", {}).items():
            for method, operation in operations.items():
                for parameter in operation.get("parameters", []):
                    if parameter.get("in") != "path":
                        continue
                    if parameter["name"] == "name":
                        parameter["schema"] = {"type": "string", "enum": names}
                    elif parameter["name"] == "version" and versions:
                        parameter["schema"] = {"type": "string", "enum": versions}
                if path == "/invocations" and method == "post":
                    operation["requestBody"] = default
                elif path == "/explain":
                    operation["requestBody"] = _mlflow_body(rows[0], EXPLAIN_MAX_ROWS, params[0])
                elif path == "/models/{name}/invocations":
                    operation["requestBody"] = shared
                elif path == "/models/{name}/explain":
                    operation["requestBody"] = _mlflow_body(rows[0], EXPLAIN_MAX_ROWS) if shared is not _MLFLOW_BODY \
                        else _MLFLOW_BODY
                if path in ("/explain", "/models/{name}/explain"):
                    operation["responses"] = {**operation.get("responses", {}), **copy.deepcopy(errors)}
        return doc

    app.openapi = openapi


def create_app(endpoints: Endpoint | list[Endpoint], follow: bool = True, limits: Limits | None = None) -> FastAPI:
    """One server for one or several endpoints; ``/invocations`` answers with the first one."""
    endpoints = [endpoints] if isinstance(endpoints, Endpoint) else list(endpoints)
    if not endpoints:
        raise InvalidInput("a server needs at least one endpoint")
    by_key = {e.key: e for e in endpoints}
    if len(by_key) != len(endpoints):
        raise InvalidInput("two endpoints follow the same model and alias")
    default = endpoints[0]
    admission = (limits or Limits()).serving()
    for endpoint in endpoints:  # the batchers are built at load (lifespan), after this
        if limits is not None or endpoint.limits is None:
            endpoint.limits = admission
    limits = limits or Limits()
    metrics = Metrics()
    guard = Guard(default.settings, default.model_name)
    for endpoint in endpoints:
        endpoint.on_event = metrics.on_event

    @asynccontextmanager
    async def lifespan(app):
        for endpoint in endpoints:  # load and warm up before the server reports ready
            try:
                await run_in_threadpool(endpoint.load)
            except CivicMLError as err:  # start anyway: /health says why it is not ready
                endpoint.last_error = str(err)
                log.error("endpoint %s not ready: %s", endpoint.key, err)
            else:
                try:
                    await run_in_threadpool(endpoint.refresh_rollout)
                except Exception as err:  # serve the champion alone; /health says why
                    endpoint.last_error = f"roll-out not loaded: {type(err).__name__}: {err}"
            if follow:
                endpoint.follow()
        yield
        for endpoint in endpoints:
            endpoint.close()
        guard.close()  # refused requests still counted go to the audit trail

    title = ", ".join(f"{e.model_name}@{e.alias}" for e in endpoints)
    app = FastAPI(title=f"CivicML: {title}", lifespan=lifespan,
                  description="MLflow scoring protocol (/invocations) and Open Inference Protocol V2 (/v2).")
    app.state.endpoints = by_key
    app.state.metrics = metrics
    err_mlflow = _errors(_MLFLOW_ERR, guard.team)
    err_v2 = _errors(_V2_ERR, guard.team)

    def _endpoint(name: str) -> Endpoint:
        try:
            return by_key[name]
        except KeyError:
            raise NotFound(f"unknown model '{name}' (served: {', '.join(by_key)})") from None

    # -- MLflow's scoring protocol ----------------------------------------------------------
    @app.get("/ping")
    def ping():
        if not all(e.ready for e in endpoints):
            return Json({"status": "loading", "error": default.last_error}, status_code=503)
        return Json({"status": "ok"})

    @app.get("/health")
    def health():
        models = [{"model": e.served.to_dict() if e.served else None,
                   "follows": f"models:/{e.model_name}@{e.alias}" + (f" ({e.variant} variant)" if e.variant else ""),
                   "last_error": e.last_error,
                   "rollout": ({"version": e.rollout.version, "weight": e.rollout.weight, "mode": e.rollout.mode}
                               if e.rollout else None),
                   "shadow_agreement": e.shadow_counts if e.shadow_counts["total"] else None,
                   "automatic_rollback": e.rolled_back} for e in endpoints]
        ok = all(e.ready for e in endpoints)
        body = {"status": "ok" if ok else "unavailable", **models[0], "models": models, "worker": os.getpid(),
                "auth": "team (service token required)" if guard.team else "single-user (no token; loopback only)"}
        return Json(body, status_code=200 if ok else 503)

    @app.get("/version")
    def version():
        return Json({"model": default.served.to_dict() if default.served else None})

    async def _invoke(endpoint: Endpoint, request: Request):
        started = time.perf_counter()
        status, served = 200, None
        metrics.in_flight.inc()
        try:
            guard.check(request, endpoint.model_name)
            body = await read_body(request, limits.max_body_bytes)
            payload, params = await _decode(MLflowCodec.decode, body, request.headers.get("content-type"))
            output, served, loaded = await endpoint.apredict(payload, params)
            body = {**MLflowCodec.body(output, loaded.runtime.metadata), "model": served.to_dict()}
            warnings = loaded.validator.out_of_range(payload)
            if warnings:  # answered, but outside what the model saw (out_of_range: warn)
                body["warnings"] = warnings
                metrics.count_out_of_range(endpoint.model_name, warnings)
            response = Json(body, headers=_served_headers(served))
        except Exception as err:
            metrics.count_out_of_range(endpoint.model_name, refused=err)
            response = _mlflow_error(err)
            status = response.status_code
        finally:
            metrics.in_flight.dec()
        _count(endpoint, served, "mlflow", status, started)
        return response

    @app.post("/invocations", openapi_extra={"requestBody": _MLFLOW_BODY}, responses=err_mlflow)
    async def invocations(request: Request):
        return await _invoke(default, request)

    @app.post("/models/{name}/invocations", openapi_extra={"requestBody": _MLFLOW_BODY}, responses=err_mlflow)
    async def model_invocations(name: str, request: Request):
        try:
            endpoint = _endpoint(name)
        except NotFound as err:
            return _mlflow_error(err)
        return await _invoke(endpoint, request)

    def _count(endpoint: Endpoint, served, protocol: str, status: int, started: float) -> None:
        version = served.version if served else "-"
        variant = (served.variant if served else None) or "-"
        metrics.requests.labels(endpoint.model_name, version, variant, protocol, str(status)).inc()
        metrics.latency.labels(endpoint.model_name, version, variant, protocol).observe(
            time.perf_counter() - started)

    # -- Open Inference Protocol V2 ---------------------------------------------------------
    @app.get("/v2")
    def v2_server():
        return Json({"name": "civicml", "version": _version(), "extensions": []})

    @app.get("/v2/health/live")
    def v2_live():
        return Json({"live": True})

    @app.get("/v2/health/ready")
    def v2_ready():
        ready = all(e.ready for e in endpoints)
        return Json({"ready": ready}, status_code=200 if ready else 503)

    def _v2_metadata(endpoint: Endpoint) -> dict:
        loaded = endpoint.current
        if loaded is None:
            raise Unavailable(f"model '{endpoint.key}' is not loaded: {endpoint.last_error or 'loading'}")
        validator = loaded.validator
        if validator.tensor:
            spec = validator.tensor_spec
            inputs = [{"name": spec.name or "input", "datatype": v2_datatype(spec.type), "shape": list(spec.shape)}]
        else:
            inputs = [{"name": c["name"], "datatype": v2_datatype(c["datatype"]), "shape": [-1],
                       **({"parameters": {k: c[k] for k in ("range", "allowed") if k in c}}
                          if "range" in c or "allowed" in c else {})} for c in validator.describe()]
        meta = loaded.runtime.metadata or {}
        outputs = v2_metadata_outputs(meta)
        return {"name": endpoint.key, "versions": [loaded.served.version], "platform": "civicml",
                "inputs": inputs, "outputs": outputs,
                "parameters": {**_served_parameters(loaded.served), "task": meta.get("task"),
                               "use_case": meta.get("use_case")}}

    @app.get("/v2/models/{name}", responses=err_v2)
    def v2_model(name: str):
        try:
            return Json(_v2_metadata(_endpoint(name)))
        except Exception as err:
            return _v2_error(err)

    @app.get("/v2/models/{name}/versions/{version}", responses=err_v2)
    def v2_model_version(name: str, version: str):
        try:
            endpoint = _endpoint(name)
            _check_version(endpoint, version)
            return Json(_v2_metadata(endpoint))
        except Exception as err:
            return _v2_error(err)

    @app.get("/v2/models/{name}/ready", responses=err_v2)
    def v2_model_ready(name: str):
        try:
            endpoint = _endpoint(name)
        except NotFound as err:
            return _v2_error(err)
        return Json({"name": name, "ready": endpoint.ready}, status_code=200 if endpoint.ready else 503)

    @app.get("/v2/models/{name}/versions/{version}/ready", responses=err_v2)
    def v2_model_version_ready(name: str, version: str):
        try:
            endpoint = _endpoint(name)
            _check_version(endpoint, version)
        except Exception as err:
            return _v2_error(err)
        return Json({"name": name, "ready": endpoint.ready})

    def _check_version(endpoint: Endpoint, version: str) -> None:
        served = endpoint.served
        if served is None or served.version != version:
            raise NotFound(f"model '{endpoint.key}' serves version {served.version if served else 'none'}, "
                           f"not {version}")

    async def _v2_infer(name: str, version: str | None, request: Request):
        started = time.perf_counter()
        served, endpoint = None, None
        metrics.in_flight.inc()
        try:
            endpoint = _endpoint(name)
            guard.check(request, endpoint.model_name)
            if version is not None:
                _check_version(endpoint, version)
            body = await read_body(request, limits.max_body_bytes)
            loaded = endpoint.current
            tensor_model = bool(loaded and loaded.validator.tensor)
            kinds = {c["name"]: c["datatype"] for c in loaded.validator.describe()} if loaded else None
            payload, params, meta = await _decode(V2Codec.decode, body, request.headers.get("content-type"),
                                                  tensor_model, request.headers.get("inference-header-content-length"),
                                                  kinds)
            if loaded is not None and meta.get("outputs"):  # unknown requested outputs: refused before the model
                _check_outputs(meta, [o["name"] for o in _v2_metadata(endpoint)["outputs"]])
            output, served, loaded = await endpoint.apredict(payload, params)
            info = loaded.runtime.metadata or {}
            answer = stable_answer(output, info.get("task"), info.get("labels"), metadata=info)
            _check_outputs(meta, list(answer))
            parameters = _served_parameters(served)
            warnings = loaded.validator.out_of_range(payload)
            if warnings:
                parameters["warnings"] = "; ".join(w["message"] for w in warnings)
                metrics.count_out_of_range(endpoint.model_name, warnings)
            response = Json(V2Codec.encode(answer, name, served.version, meta, parameters),
                            headers=_served_headers(served))
        except Exception as err:
            if endpoint is not None:
                metrics.count_out_of_range(endpoint.model_name, refused=err)
            response = _v2_error(err)
        finally:
            metrics.in_flight.dec()
        if endpoint is not None:
            _count(endpoint, served, "v2", response.status_code, started)
        return response

    @app.post("/v2/models/{name}/infer", openapi_extra={"requestBody": _V2_BODY}, responses=err_v2)
    async def v2_infer(name: str, request: Request):
        return await _v2_infer(name, None, request)

    @app.post("/v2/models/{name}/versions/{version}/infer", openapi_extra={"requestBody": _V2_BODY},
              responses=err_v2)
    async def v2_infer_version(name: str, version: str, request: Request):
        return await _v2_infer(name, version, request)

    # -- watching ---------------------------------------------------------------------------
    @app.get("/metrics", response_class=PlainTextResponse)  # Prometheus text format
    def prometheus():
        return Response(metrics.render(), media_type=metrics.content_type)

    app.include_router(explain_router(endpoints, guard, lambda e, served, status, started:  # POST /explain,
                                      _count(e, served, "explain", status, started)))  # /models/{name}/explain
    _live_openapi(app, endpoints, err_mlflow)
    return app


def _check_outputs(meta: dict, known: list[str]) -> None:
    """A V2 request's ``outputs`` must name outputs the model has (400 naming the others)."""
    wanted = meta.get("outputs") or []
    unknown = [str(name) for name in wanted if name not in known]
    if known and unknown:
        raise InvalidInput(f"unknown requested outputs: {', '.join(unknown)} (the model's outputs: "
                           f"{', '.join(known)})")


def _served_headers(served) -> dict[str, str]:
    """Every answer names the version that answered, and for a variant its kind and parent version."""
    headers = {"X-CivicML-Model-Version": served.version}
    if served.variant:
        headers.update({"X-CivicML-Variant": served.variant, "X-CivicML-Variant-Of": str(served.variant_of)})
    return headers


def _served_parameters(served) -> dict[str, str]:
    """What a V2 answer's ``parameters`` say about who answered: alias, runtime, variant and its parent."""
    return {k: v for k, v in served.to_dict().items() if k not in ("name", "version")}


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("civicml")
    except Exception:
        return "dev"


__all__ = ["Limits", "MAX_BODY_BYTES", "MAX_ROWS", "create_app", "read_body", "status_of"]
