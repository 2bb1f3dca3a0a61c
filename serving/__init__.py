"""Live HTTP endpoints that follow registry aliases.

``serving`` never imports training or tuning code: it gets verified local models
from ``registry`` and runs them through a named :class:`Runtime`. Public face::

    from serving import Endpoint, BackgroundServer, EndpointClient, serve
    endpoint = Endpoint("service-requests-router", alias="champion")
"""

from serving.client import EndpointClient
from serving.endpoint import Endpoint, Served
from serving.http import create_app
from serving.runtime import PyfuncRuntime, Runtime, get_runtime, register_runtime, runtime_names
from serving.server import BackgroundServer, free_port, serve

__all__ = [
    "BackgroundServer", "Endpoint", "EndpointClient", "PyfuncRuntime", "Runtime", "Served", "create_app",
    "free_port", "get_runtime", "register_runtime", "runtime_names", "serve",
]
