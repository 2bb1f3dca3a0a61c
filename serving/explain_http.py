"""``POST /explain``: the same input formats as ``/invocations``; each row's answer and why.

Explanations are computed against the version the endpoint serves at that moment
(loaded once more, beside the serving copy, and kept until the alias moves) and
the response names it. Errors map to status codes through :mod:`serving.http`.
"""

from __future__ import annotations

import threading

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from civicml.errors import CivicMLError, Unavailable
from serving.codecs import MLflowCodec
from serving.endpoint import Endpoint


class _Explainers:
    """One :class:`~serving.explain.ModelExplainer` for the served version; replaced when the version moves."""

    def __init__(self, endpoint: Endpoint):
        self.endpoint = endpoint
        self._lock = threading.Lock()
        self._current = None

    def get(self):
        from registry import resolve
        from serving.explain import ModelExplainer

        served = self.endpoint.served
        if served is None:
            raise Unavailable(f"no version of '{self.endpoint.model_name}' is loaded yet")
        with self._lock:
            if self._current is None or self._current.served["version"] != served.version:
                local = resolve(served.name, served.version, settings=self.endpoint.settings)
                self._current = ModelExplainer(local, served.to_dict())
            return self._current


def router(endpoint: Endpoint, guard=None) -> APIRouter:
    """``POST /explain`` for ``endpoint``; ``guard`` (serving.http.Guard) checks callers as inference routes do."""
    from serving.http import Limits, _mlflow_error, read_body

    limit = Limits().max_body_bytes

    explainers = _Explainers(endpoint)
    api = APIRouter()

    @api.post("/explain")
    async def explain(request: Request):
        try:
            if guard is not None:
                guard.check(request)
            body = await read_body(request, limit)
            payload, params = MLflowCodec.decode(body, request.headers.get("content-type"))
            explainer = await run_in_threadpool(explainers.get)
            rows = await run_in_threadpool(explainer.explain, payload, params)
        except CivicMLError as err:
            return _mlflow_error(err)
        except (ValueError, TypeError, KeyError) as err:  # the model itself rejected this input
            return JSONResponse({"error_code": "INVALID_INPUT", "message": f"the model rejected the input: {err}"},
                                status_code=422)
        return JSONResponse({"explanations": [r.to_dict() for r in rows], "model": explainer.served},
                            headers={"X-CivicML-Model-Version": str(explainer.served["version"])})

    return api
