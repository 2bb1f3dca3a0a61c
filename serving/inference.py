"""The data plane of a server (MLServer's ``DataPlane``): the endpoints it hosts, and the one way an
inference request to any of them is answered, whichever protocol it came in.

:meth:`DataPlane.infer` finds the endpoint, checks the caller (serving/auth.py), reads the body within
the server's limits (serving/limits.py), decodes it with the protocol's codec, predicts through the
endpoint (validation, admission, batching), notes values outside the training range, shapes the answer in
the protocol's body and counts it (serving/metrics.py). A protocol (serving/protocols.py) supplies only
its decode, its encode and its error body; errors become statuses in serving/errors.py.
"""

from __future__ import annotations

import time

from fastapi import Request
from fastapi.responses import Response

from civicml.errors import InvalidInput, NotFound
from serving.auth import Guard
from serving.endpoint import Endpoint
from serving.errors import Json
from serving.limits import Limits, read_body
from serving.metrics import Metrics
from serving.protocols import Prediction, Protocol


class DataPlane:
    """The endpoints one server hosts (the first answers ``/invocations``), who may call them, what one
    request may be, and the server's metrics."""

    def __init__(self, endpoints: list[Endpoint], metrics: Metrics, limits: Limits):
        if not endpoints:
            raise InvalidInput("a server needs at least one endpoint")
        self.by_key = {e.key: e for e in endpoints}
        if len(self.by_key) != len(endpoints):
            raise InvalidInput("two endpoints follow the same model and alias")
        self.endpoints = endpoints
        self.default = endpoints[0]
        self.metrics = metrics
        self.limits = limits
        self.guard = Guard(self.default.settings, self.default.model_name)

    def endpoint(self, name: str | None = None) -> Endpoint:
        """The endpoint serving model ``name`` (None: the first), or :class:`NotFound`."""
        if name is None:
            return self.default
        try:
            return self.by_key[name]
        except KeyError:
            raise NotFound(f"unknown model '{name}' (served: {', '.join(self.by_key)})") from None

    @staticmethod
    def check_version(endpoint: Endpoint, version: str) -> None:
        """:class:`NotFound` unless ``endpoint`` serves ``version`` now."""
        served = endpoint.served
        if served is None or served.version != version:
            raise NotFound(f"model '{endpoint.key}' serves version {served.version if served else 'none'}, "
                           f"not {version}")

    async def infer(self, protocol: Protocol, request: Request, name: str | None = None,
                    version: str | None = None) -> Response:
        """Answer one inference request in ``protocol``: the answer, or the error in its shape; counted."""
        started = time.perf_counter()
        endpoint = prediction = None
        self.metrics.in_flight.inc()
        try:
            endpoint = self.endpoint(name)
            self.guard.check(request, endpoint.model_name)
            if version is not None:
                self.check_version(endpoint, version)
            body = await read_body(request, self.limits.max_body_bytes)
            decoded = await protocol.decode(endpoint, body, request.headers)
            output, served, loaded = await endpoint.apredict(decoded.payload, decoded.params)
            prediction = Prediction(output, served, loaded, loaded.validator.out_of_range(decoded.payload))
            response = Json(protocol.encode(endpoint, decoded, prediction), headers=served_headers(served))
            if prediction.warnings:
                self.metrics.count_out_of_range(endpoint.model_name, prediction.warnings)
        except Exception as err:  # noqa: BLE001 - answered in the protocol's shape (serving/errors.py)
            if endpoint is not None:
                self.metrics.count_out_of_range(endpoint.model_name, refused=err)
            response = protocol.error(err)
        finally:
            self.metrics.in_flight.dec()
        if endpoint is not None:
            self.count(endpoint, prediction.served if prediction else None, protocol.name, response.status_code,
                       started)
        return response

    def count(self, endpoint: Endpoint, served, protocol: str, status: int, started: float) -> None:
        """One answer or refusal in the metrics: by model, version, variant, protocol and status."""
        version = served.version if served else "-"
        variant = (served.variant if served else None) or "-"
        self.metrics.requests.labels(endpoint.model_name, version, variant, protocol, str(status)).inc()
        self.metrics.latency.labels(endpoint.model_name, version, variant, protocol).observe(
            time.perf_counter() - started)


def served_headers(served) -> dict[str, str]:
    """Every answer names the version that answered, and for a variant its kind and parent version."""
    headers = {"X-CivicML-Model-Version": served.version}
    if served.variant:
        headers.update({"X-CivicML-Variant": served.variant, "X-CivicML-Variant-Of": str(served.variant_of)})
    return headers


__all__ = ["DataPlane", "served_headers"]
