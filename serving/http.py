"""The HTTP layer: MLflow's scoring protocol over FastAPI, and nothing else.

Domain errors become HTTP status codes here, in one place; every error body is
``{"error_code": ..., "message": ...}`` like MLflow's scoring server.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from civicml.errors import CivicMLError, IntegrityError, InvalidInput, NotFound, PermissionDenied, Unavailable
from serving.dataplane import parse, to_json
from serving.endpoint import Endpoint

log = logging.getLogger("civicml.serving")

_STATUS = {InvalidInput: (400, "BAD_REQUEST"), NotFound: (404, "RESOURCE_DOES_NOT_EXIST"),
           PermissionDenied: (403, "PERMISSION_DENIED"), IntegrityError: (503, "MODEL_INTEGRITY"),
           Unavailable: (503, "UNAVAILABLE")}


def _error(err: Exception) -> JSONResponse:
    for kind, (status, code) in _STATUS.items():
        if isinstance(err, kind):
            return JSONResponse({"error_code": code, "message": str(err)}, status_code=status)
    return JSONResponse({"error_code": "BAD_REQUEST", "message": str(err)}, status_code=400)


def create_app(endpoint: Endpoint, follow: bool = True) -> FastAPI:
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        try:
            await run_in_threadpool(endpoint.load)
        except CivicMLError as err:  # start anyway: /health says why it is not ready
            endpoint.last_error = str(err)
            log.error("endpoint not ready: %s", err)
        if follow:
            endpoint.follow()
        yield
        endpoint.close()

    app = FastAPI(title=f"CivicML: {endpoint.model_name}@{endpoint.alias}", lifespan=lifespan)

    @app.get("/ping")
    def ping():
        if not endpoint.ready:
            return JSONResponse({"status": "loading", "error": endpoint.last_error}, status_code=503)
        return {"status": "ok"}

    @app.get("/health")
    def health():
        served = endpoint.served
        body = {"status": "ok" if served else "unavailable", "model": served.to_dict() if served else None,
                "follows": f"models:/{endpoint.model_name}@{endpoint.alias}", "last_error": endpoint.last_error}
        return JSONResponse(body, status_code=200 if served else 503)

    @app.get("/version")
    def version():
        served = endpoint.served
        return {"model": served.to_dict() if served else None}

    @app.post("/invocations")
    async def invocations(request: Request):
        body = await request.body()
        try:
            payload, params = parse(body, request.headers.get("content-type"))
            output, served = await run_in_threadpool(endpoint.predict, payload, params)
        except CivicMLError as err:
            return _error(err)
        except Exception as err:  # the model itself failed on this input
            from mlflow.exceptions import MlflowException

            if isinstance(err, (MlflowException, ValueError, TypeError, KeyError)):
                return JSONResponse({"error_code": "INVALID_INPUT", "message": f"the model rejected the input: {err}"},
                                    status_code=422)
            log.exception("prediction failed")
            return JSONResponse({"error_code": "INTERNAL_ERROR", "message": "prediction failed"}, status_code=500)
        return JSONResponse({"predictions": to_json(output), "model": served.to_dict()},
                            headers={"X-CivicML-Model-Version": served.version})

    app.include_router(__import__("serving.explain_http", fromlist=["router"]).router(endpoint))  # POST /explain
    return app
