"""Errors to HTTP statuses, in one place (MLServer's ``rest/errors.py``).

Only CivicML's own errors (:mod:`civicml.errors`, and the data plane's, batching's and the codecs'
subclasses of them) say something about the request, so only they become 4xx (or a 503 the caller may
retry). Anything else is a fault of the server: a 500 with a generic message, and the error is logged.

MLflow routes answer errors as ``{"error_code": ..., "message": ...}`` like MLflow's scoring server; V2
routes (``/v2/...``) as ``{"error": ...}``. Routes that count their answers (inference, explanations)
turn errors into responses themselves with :func:`mlflow_error` / :func:`v2_error`; every other route
just raises, and :func:`install` answers for it.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import Response

from civicml.errors import CivicMLError, IntegrityError, InvalidInput, NotFound, PermissionDenied, Unavailable
from serving.auth import Unauthenticated
from serving.batching import Overloaded, TooCostly
from serving.codecs import dumps
from serving.dataplane import TooLarge, UnsupportedMediaType

log = logging.getLogger("civicml.serving")

INTERNAL = "the server failed to answer this request (the error is logged)"

# the first kind an error is an instance of decides: subclasses before their bases
STATUS = [(TooLarge, 413, "REQUEST_TOO_LARGE"), (TooCostly, 413, "REQUEST_TOO_LARGE"),
          (UnsupportedMediaType, 415, "UNSUPPORTED_MEDIA_TYPE"), (Overloaded, 503, "TEMPORARILY_UNAVAILABLE"),
          (InvalidInput, 400, "BAD_REQUEST"), (NotFound, 404, "RESOURCE_DOES_NOT_EXIST"),
          (Unauthenticated, 401, "UNAUTHENTICATED"), (PermissionDenied, 403, "PERMISSION_DENIED"),
          (IntegrityError, 503, "MODEL_INTEGRITY"), (Unavailable, 503, "UNAVAILABLE")]


class Json(Response):
    media_type = "application/json"

    def render(self, content) -> bytes:
        return dumps(content)


def status_of(err: Exception) -> tuple[int, str, str]:
    """(HTTP status, MLflow error code, message) for any exception raised while answering."""
    for kind, status, code in STATUS:
        if isinstance(err, kind):
            return status, code, str(err)
    from starlette.requests import ClientDisconnect

    if isinstance(err, ClientDisconnect):  # the caller went away mid-body: nobody to answer, nothing failed
        return 499, "CLIENT_CLOSED_REQUEST", "the client closed the connection before sending the whole body"
    log.error("request failed: %s: %s", type(err).__name__, err, exc_info=err)
    return 500, "INTERNAL_ERROR", INTERNAL


def _retry_after(err: Exception) -> dict[str, str] | None:
    """An overloaded server says when to come back (``Retry-After``, seconds)."""
    return {"Retry-After": str(err.retry_after)} if isinstance(err, Overloaded) else None


def mlflow_error(err: Exception) -> Json:
    """The MLflow scoring protocol's error body."""
    status, code, message = status_of(err)
    return Json({"error_code": code, "message": message}, status_code=status, headers=_retry_after(err))


def v2_error(err: Exception) -> Json:
    """The Open Inference Protocol V2's error body."""
    status, _, message = status_of(err)
    return Json({"error": message}, status_code=status, headers=_retry_after(err))


async def _answer(request: Request, err: Exception) -> Json:
    return (v2_error if request.url.path.startswith("/v2") else mlflow_error)(err)


def install(app: FastAPI) -> None:
    """Every error a route raises answered in its protocol's shape (an unexpected one still reaches the
    server's log through Starlette, after this 500 is sent)."""
    app.add_exception_handler(CivicMLError, _answer)
    app.add_exception_handler(Exception, _answer)


__all__ = ["Json", "STATUS", "install", "mlflow_error", "status_of", "v2_error"]
