"""Live HTTP endpoints that follow registry aliases: a serving engine.

``serving`` never imports training or tuning code: it gets verified local models
from ``registry`` and runs them through a named :class:`Runtime`. Layers, each its own module:
codecs (MLflow scoring protocol, Open Inference Protocol V2) -> validation compiled from the
signature (dataplane) -> adaptive batching (batching) -> runtimes found by name or entry point
(runtime), with canary/shadow roll-outs read from the registry (endpoint) and Prometheus metrics.
Public face::

    from serving import Endpoint, BackgroundServer, EndpointClient, serve
    endpoint = Endpoint("service-requests-router", alias="champion")
"""

from serving.batching import BatchingRuntime
from serving.client import EndpointClient
from serving.endpoint import Endpoint, EndpointOptions, Served
from serving.http import Limits, create_app
from serving.runtime import PyfuncRuntime, Runtime, get_runtime, register_runtime, runtime_names
from serving.server import BackgroundServer, free_port, serve

__all__ = [
    "BackgroundServer", "BatchingRuntime", "Endpoint", "EndpointOptions", "Limits", "EndpointClient", "PyfuncRuntime", "Runtime", "Served", "create_app",
    "free_port", "get_runtime", "register_runtime", "runtime_names", "serve",
]
