"""civicml server: team mode, an MLflow tracking server on PostgreSQL with an S3 bucket for artifacts.

Artifacts are proxied (``--serve-artifacts``): clients never hold S3 credentials,
only the server does. The console is served at ``/console`` by the same server
(``--app-name civicml``, :mod:`app.console.team`) unless ``--no-console``. Binds to loopback unless told otherwise; the MLflow server
itself has no authentication, so a wider bind belongs behind a proxy that has
(see docs/team-mode.md).
"""

from __future__ import annotations

import os
import sys
from urllib.parse import urlparse

from civicml.errors import InvalidInput
from civicml.lazy import optional
from civicml.settings import ServerSettings

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def add_commands(sub) -> None:
    p = sub.add_parser("server", help="start an MLflow tracking server for a team (PostgreSQL + S3, proxied "
                                      "artifacts)")
    p.add_argument("--backend-store-uri", help="postgresql://user@host:5432/db (env CIVICML_SERVER_BACKEND)")
    p.add_argument("--artifacts-destination", help="s3://bucket/prefix (env CIVICML_SERVER_ARTIFACTS)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1, loopback only)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--workers", type=int, default=1, help="server worker processes (default 1)")
    p.add_argument("--s3-endpoint-url", help="S3-compatible endpoint (MinIO, moto); else env MLFLOW_S3_ENDPOINT_URL"
                                             " or AWS S3")
    p.add_argument("--allowed-hosts", help="Host headers the server accepts (MLflow's --allowed-hosts)")
    p.add_argument("--no-check", action="store_true", help="skip the reachability checks of PostgreSQL and S3")
    p.add_argument("--no-console", action="store_true", help="serve MLflow alone, without the console at /console")
    p.add_argument("--dry-run", action="store_true", help="print the command that would run, and exit")
    p.set_defaults(func=cmd_server)


def server_command(backend_store_uri: str, artifacts_destination: str, host: str = "127.0.0.1", port: int = 5000,
                   workers: int = 1, allowed_hosts: str | None = None, app_name: str | None = None) -> list[str]:
    """The ``mlflow server`` command line for team mode (validated); ``app_name``: an ``mlflow.app`` plugin
    (``civicml``: MLflow's app with the console at ``/console``, :mod:`app.console.team`)."""
    scheme = urlparse(backend_store_uri).scheme
    if not scheme.startswith(("postgresql", "mysql", "sqlite", "mssql")):
        raise InvalidInput(f"--backend-store-uri must be a database URI (postgresql://...), got '{backend_store_uri}'")
    if not urlparse(artifacts_destination).scheme:
        raise InvalidInput(f"--artifacts-destination must be a URI (s3://bucket/prefix), got '{artifacts_destination}'")
    if not 0 < port < 65536:
        raise InvalidInput(f"--port must be 1-65535, got {port}")
    if workers < 1:
        raise InvalidInput(f"--workers must be at least 1, got {workers}")
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", sqlalchemy_uri(backend_store_uri),
               "--serve-artifacts", "--artifacts-destination", artifacts_destination,
               "--host", host, "--port", str(port), "--workers", str(workers)]
    if allowed_hosts:
        command += ["--allowed-hosts", allowed_hosts]
    if app_name:
        command += ["--app-name", app_name]
    return command


def own_url(host: str, port: int) -> str:
    """How a process on the server's machine reaches the server (a wildcard bind answers on loopback)."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def sqlalchemy_uri(uri: str) -> str:
    """``postgresql://`` names a driver by SQLAlchemy's default (psycopg 3 since SQLAlchemy 2.1); use psycopg2
    when that is the driver installed."""
    if uri.startswith("postgresql://"):
        import importlib.util

        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
            return "postgresql+psycopg2://" + uri[len("postgresql://"):]
    return uri


def check_stores(backend_store_uri: str, artifacts_destination: str, endpoint_url: str | None) -> None:
    """Fail fast, with one line, if PostgreSQL or the S3 bucket cannot be reached."""
    if backend_store_uri.startswith("postgresql"):
        psycopg2 = optional("psycopg2", "team")
        dsn = backend_store_uri.replace("postgresql+psycopg2://", "postgresql://", 1)
        try:
            psycopg2.connect(dsn, connect_timeout=5).close()
        except psycopg2.OperationalError as err:
            raise InvalidInput(f"cannot reach the backend store {_redact(backend_store_uri)}: "
                               f"{' '.join(str(err).split())[:200]}") from None
    if artifacts_destination.startswith("s3://"):
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        bucket = urlparse(artifacts_destination).netloc
        client = boto3.client("s3", endpoint_url=endpoint_url,
                              config=Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 1}))
        try:
            client.head_bucket(Bucket=bucket)
        except (BotoCoreError, ClientError) as err:
            raise InvalidInput(f"cannot reach bucket '{bucket}'" + (f" at {endpoint_url}" if endpoint_url else "")
                               + f": {' '.join(str(err).split())[:200]}") from None


def _redact(uri: str) -> str:
    parsed = urlparse(uri)
    if parsed.password:
        return uri.replace(f":{parsed.password}@", ":***@", 1)
    return uri


def cmd_server(args) -> int:
    settings = ServerSettings.from_env(**{k: v for k, v in (("backend_store_uri", args.backend_store_uri),
                                                           ("artifacts_destination", args.artifacts_destination))
                                          if v})
    if not settings.backend_store_uri:
        raise InvalidInput("no backend store: pass --backend-store-uri postgresql://... or set CIVICML_SERVER_BACKEND")
    if not settings.artifacts_destination:
        raise InvalidInput("no artifact store: pass --artifacts-destination s3://bucket/prefix or set "
                           "CIVICML_SERVER_ARTIFACTS")
    from app.console.team import APP_NAME, MOUNT, entry_point_installed

    console_note = None
    if args.no_console:
        app_name = None
    elif entry_point_installed():
        app_name = APP_NAME
    else:  # a checkout installed before the entry point existed: MLflow cannot find the app
        app_name = None
        console_note = ("civicml: note: the console is not mounted: MLflow finds it through this package's "
                        "'mlflow.app' entry point, which this installation lacks (reinstall civicml); meanwhile run "
                        f"`civicml console --tracking-uri {own_url(args.host, args.port)}` beside the server\n")
    allowed_hosts = args.allowed_hosts
    if app_name and allowed_hosts and "*" not in allowed_hosts:  # the console's own calls reach it on this address
        own = urlparse(own_url(args.host, args.port)).netloc
        if own not in [h.strip() for h in allowed_hosts.split(",")]:
            allowed_hosts += f",{own}"
    command = server_command(settings.backend_store_uri, settings.artifacts_destination, args.host, args.port,
                             args.workers, allowed_hosts, app_name)
    env = dict(os.environ)
    if app_name:  # the console inside the server reads the registry through the server itself
        env["CIVICML_TRACKING_URI"] = own_url(args.host, args.port)
    if args.s3_endpoint_url:
        env["MLFLOW_S3_ENDPOINT_URL"] = args.s3_endpoint_url
    if args.dry_run:
        print(" ".join(_redact(part) for part in command))
        return 0
    if not args.no_check:
        check_stores(settings.backend_store_uri, settings.artifacts_destination, env.get("MLFLOW_S3_ENDPOINT_URL"))
    if args.host not in LOOPBACK:
        sys.stderr.write(f"civicml: warning: binding to {args.host}: the MLflow server has no authentication of its "
                         f"own; put it behind an authenticating proxy (docs/team-mode.md)\n")
    sys.stderr.write(f"civicml: team server on http://{args.host}:{args.port} "
                     f"(backend {_redact(settings.backend_store_uri)}, artifacts {settings.artifacts_destination})\n")
    if app_name:
        sys.stderr.write(f"civicml: console on http://{args.host}:{args.port}{MOUNT}/\n")
    elif console_note:
        sys.stderr.write(console_note)
    sys.stderr.flush()
    os.execve(command[0], command, env)  # the server replaces this process: signals reach it directly
    return 0  # not reached
