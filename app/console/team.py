"""The console on team mode's server: MLflow's own server app with the console mounted at ``/console``.

``civicml server`` starts ``mlflow server --app-name civicml``: MLflow's app-plugin
mechanism (the ``mlflow.app`` entry-point group, as MLflow's own ``basic-auth`` app uses)
finds :func:`create_app` through the entry point this package declares, and uvicorn
calls it (``--factory``) in each worker. The result is MLflow's FastAPI app -- the
tracking and registry REST API, the proxied artifacts and the MLflow UI, unchanged --
with one route in front of its catch-all: ``/console``.

The console inside the server reads the registry through the server itself
(``CIVICML_TRACKING_URI``, which ``civicml server`` points at its own address) with the
server's own CivicML settings: its access file and its token (``CIVICML_TOKEN``, e.g. a
service token), so without a person's sign-in it only reads, and promote and rollback
go through the same role-checked registry calls as the CLI.
"""

from __future__ import annotations

import logging

MOUNT = "/console"
APP_NAME = "civicml"  # the entry point's name in the mlflow.app group (pyproject.toml)

log = logging.getLogger("app.console")


def mount_console(app, console, path: str = MOUNT):
    """Put ``console`` at ``path`` in front of ``app``'s routes (MLflow mounts its Flask app at ``/``)."""
    app.mount(path, console, name="civicml-console")  # appended after MLflow's catch-all: move it in front
    app.router.routes.insert(0, app.router.routes.pop())
    return app


def create_app():
    """The ``mlflow.app`` factory: MLflow's server app, with the console at ``/console``."""
    from mlflow.server import app as flask_app

    from app.console import create_console
    from civicml.settings import Settings

    try:
        from mlflow.environment_variables import _MLFLOW_SGI_NAME

        asgi = _MLFLOW_SGI_NAME.get() in (None, "uvicorn")
    except ImportError:  # an MLflow without the variable always serves through uvicorn
        asgi = True
    if not asgi:  # gunicorn or waitress: a WSGI server cannot host the console; MLflow alone
        log.warning("the CivicML console needs MLflow's default uvicorn server; serving MLflow without it")
        return flask_app
    from mlflow.server.fastapi_app import create_fastapi_app

    return mount_console(create_fastapi_app(flask_app), create_console(Settings.from_env()))


def entry_point_installed() -> bool:
    """Whether MLflow can find :func:`create_app` (the package's metadata declares the entry point)."""
    from importlib.metadata import entry_points

    return any(e.name == APP_NAME and e.value == f"{__name__}:create_app"
               for e in entry_points(group="mlflow.app"))


__all__ = ["APP_NAME", "MOUNT", "create_app", "entry_point_installed", "mount_console"]
