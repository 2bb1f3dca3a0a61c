"""``POST /explain`` (the first model) and ``POST /models/{name}/explain`` (any model the server hosts): the
same input formats as ``/invocations``; each row's answer and why.

Explanations are computed against the version the endpoint serves at that moment
(loaded once more, beside the serving copy, and kept until the alias moves) and
the response names it. Errors map to status codes through :mod:`serving.errors`;
every answer and refusal is counted through ``count`` (the server's ``/metrics``,
protocol ``explain``).
"""

from __future__ import annotations

import threading
import time

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from civicml.errors import NotFound, Unavailable
from serving.codecs import MLflowCodec
from serving.endpoint import Endpoint
from serving.errors import mlflow_error
from serving.limits import Limits, decode_body, read_body


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


def router(endpoints: Endpoint | list[Endpoint], guard=None, count=None, limits: Limits | None = None) -> APIRouter:
    """``POST /explain`` for the first of ``endpoints`` and ``POST /models/{name}/explain`` for each;
    ``guard`` (serving.auth.Guard) checks callers as inference routes do; ``count(endpoint, served, status,
    started)`` records each answer or refusal; ``limits`` (the server's) bound each request's body."""
    limit = (limits or Limits()).max_body_bytes
    endpoints = [endpoints] if isinstance(endpoints, Endpoint) else list(endpoints)
    explainers = {e.key: (e, _Explainers(e)) for e in endpoints}
    api = APIRouter()

    async def _explain(key: str, request: Request):
        started, served = time.perf_counter(), None
        endpoint = explainers[key][0] if key in explainers else None
        try:
            if endpoint is None:
                raise NotFound(f"unknown model '{key}' (served: {', '.join(explainers)})")
            if guard is not None:
                guard.check(request)
            body = await read_body(request, limit)
            payload, params = await decode_body(MLflowCodec.decode, body, request.headers.get("content-type"))
            explainer = await run_in_threadpool(explainers[key][1].get)
            served = endpoint.served
            rows = await run_in_threadpool(explainer.explain, payload, params)
        except Exception as err:  # noqa: BLE001 - answered as MLflow's scoring server would (serving/errors.py)
            response = mlflow_error(err)
        else:
            response = JSONResponse({"explanations": [r.to_dict() for r in rows], "model": explainer.served},
                                    headers={"X-CivicML-Model-Version": str(explainer.served["version"])})
        if count is not None and endpoint is not None:
            count(endpoint, served, response.status_code, started)
        return response

    @api.post("/explain")
    async def explain(request: Request):
        return await _explain(endpoints[0].key, request)

    @api.post("/models/{name}/explain")
    async def model_explain(name: str, request: Request):
        return await _explain(name, request)

    return api
