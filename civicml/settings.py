"""One typed settings object per process, read from the environment once.

Every environment variable CivicML reads is declared here and nowhere else.

============================  ============================================  =========================
variable                      meaning                                       default
============================  ============================================  =========================
``CIVICML_HOME``              working folder of the embedded default        ``./civicml-home``
``CIVICML_TRACKING_URI``      MLflow tracking + registry URI (else          ``sqlite:///$HOME/mlflow.db``
                              ``MLFLOW_TRACKING_URI``)
``CIVICML_ARTIFACT_ROOT``     where new experiments keep artifacts          ``$HOME/artifacts`` (embedded)
``CIVICML_OPTUNA_STORAGE``    Optuna storage URI                            ``sqlite:///$HOME/optuna.db``
``CIVICML_USER``              who is acting (recorded in audit records)     the OS user
                              in single-user mode
``CIVICML_ACCESS_FILE``       access file (YAML): principals, their roles,  ``$HOME/access.yaml`` if
                              SHA-256 digests of their tokens, expiry and   it exists, else none
                              revocation. Set but empty: an error
``CIVICML_ACCESS``            no longer read: refused (it granted roles     none
                              from the environment); use the file
``CIVICML_TOKEN``             the caller's token (needed once access is     none
                              configured; never logged or printed)
``CIVICML_SERVER_BACKEND``    ``civicml server``: backend store URI         none (required)
                              (``postgresql://...``)
``CIVICML_SERVER_ARTIFACTS``  ``civicml server``: artifacts destination     none (required)
                              (``s3://bucket/prefix``)
``CIVICML_CACHE_DIR``         what CivicML can rebuild at will (MLflow's    ``$XDG_CACHE_HOME/civicml``
                              empty schema, the exported MiniLM)            or ``~/.cache/civicml``
``CIVICML_SERVE_MAX_COST``    ``civicml serve``: most cost units one        ``2000000``
                              request may have (a row costs 1 plus its
                              text's characters; a tensor row its values);
                              over it: 413
``CIVICML_SERVE_DEADLINE``    ``civicml serve``: seconds a request may      ``30``
                              wait for the model; past it: 503 with
                              ``Retry-After``
``CIVICML_SERVE_SLICE_COST``  ``civicml serve``: cost units of one slice    ``10000``
                              of a large request (slices of several
                              callers' requests take turns)
``CIVICML_PADDLE_PREDICTORS`` Paddle Inference predictors per served        half the CPUs, at most 4
                              Paddle model (read by the model itself, which
                              runs without CivicML: projects/paddle_predictor)
``CIVICML_CONSOLE_ENDPOINTS`` ``civicml console``: live endpoints whose     none
                              figures it shows (comma-separated URLs)
============================  ============================================  =========================

No access configured means single-user mode: the acting user (``CIVICML_USER``
or the OS user) holds every role, and audit records say ``auth: single-user``.
Once an access file exists, every registry call needs a token (see
``civicml.access``); no environment variable grants a role.

Read by MLflow and boto3 themselves, and passed through untouched:
``MLFLOW_S3_ENDPOINT_URL`` (S3-compatible stores: MinIO, moto), ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass, field, replace
from pathlib import Path


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "unknown"


@dataclass(frozen=True)
class Settings:
    home: Path
    tracking_uri: str
    artifact_root: str | None
    optuna_storage: str
    user: str = field(default_factory=_os_user)
    access_file: Path | None = None  # None: no access file configured (single-user mode)
    access_problem: str | None = None  # an access setting that must stop every call (never single-user mode)
    token: str | None = field(default=None, repr=False)  # the caller's token; never printed

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides) -> "Settings":
        env = dict(os.environ if env is None else env)
        explicit_home = overrides.pop("home", None)
        home = Path(explicit_home or env.get("CIVICML_HOME") or "civicml-home").resolve()
        # MLFLOW_TRACKING_URI is honoured too (`mlflow run` hands it to the entry point it starts), but an
        # explicitly chosen home means that home's own store: the variable may just be inherited.
        tracking_uri = (overrides.pop("tracking_uri", None) or env.get("CIVICML_TRACKING_URI")
                        or (None if explicit_home else env.get("MLFLOW_TRACKING_URI")))
        artifact_root = overrides.pop("artifact_root", None) or env.get("CIVICML_ARTIFACT_ROOT")
        if not tracking_uri:
            tracking_uri = f"sqlite:///{home / 'mlflow.db'}"
        if tracking_uri.startswith("sqlite:///") and not artifact_root:
            artifact_root = (Path(tracking_uri[len("sqlite:///"):]).parent / "artifacts").as_uri()
        storage = overrides.pop("optuna_storage", None) or env.get("CIVICML_OPTUNA_STORAGE")
        storage = storage or f"sqlite:///{home / 'optuna.db'}"
        user = overrides.pop("user", None) or env.get("CIVICML_USER") or _os_user()
        access_file = overrides.pop("access_file", None) or env.get("CIVICML_ACCESS_FILE")
        problem = None
        if "CIVICML_ACCESS" in env:
            problem = ("CIVICML_ACCESS is not read: roles come only from the access file; point "
                       "CIVICML_ACCESS_FILE at it")
        elif not access_file and "CIVICML_ACCESS_FILE" in env:
            problem = "CIVICML_ACCESS_FILE is set but empty; name the access file (or unset it on one-person homes)"
        if not access_file and (home / "access.yaml").exists():
            access_file = home / "access.yaml"
        token = overrides.pop("token", None) or env.get("CIVICML_TOKEN") or None
        if overrides:
            raise TypeError(f"unknown settings: {sorted(overrides)}")
        return cls(home=home, tracking_uri=tracking_uri, artifact_root=artifact_root,
                   optuna_storage=storage, user=user, access_file=Path(access_file).resolve() if access_file else None,
                   access_problem=problem, token=token)

    @property
    def embedded(self) -> bool:
        return self.tracking_uri.startswith("sqlite:") or self.tracking_uri.startswith("file:")

    def with_(self, **changes) -> "Settings":
        return replace(self, **changes)

    @property
    def access_configured(self) -> bool:
        return self.access_file is not None or self.access_problem is not None

    def ensure_home(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        return self.home


@dataclass(frozen=True)
class ServerSettings:
    """What ``civicml server`` starts: an MLflow tracking server for a team."""

    backend_store_uri: str | None
    artifacts_destination: str | None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides) -> "ServerSettings":
        env = dict(os.environ if env is None else env)
        backend = overrides.pop("backend_store_uri", None) or env.get("CIVICML_SERVER_BACKEND")
        artifacts = overrides.pop("artifacts_destination", None) or env.get("CIVICML_SERVER_ARTIFACTS")
        if overrides:
            raise TypeError(f"unknown server settings: {sorted(overrides)}")
        return cls(backend_store_uri=backend, artifacts_destination=artifacts)


@dataclass(frozen=True)
class ServingLimits:
    """What one request may cost a server (see docs/serving.md): admission control for ``civicml serve``."""

    max_cost: int = 2_000_000
    deadline_seconds: float = 30.0
    slice_cost: int = 10_000

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "ServingLimits":
        env = dict(os.environ if env is None else env)
        values = {}
        for name, field_name, kind in (("CIVICML_SERVE_MAX_COST", "max_cost", int),
                                       ("CIVICML_SERVE_DEADLINE", "deadline_seconds", float),
                                       ("CIVICML_SERVE_SLICE_COST", "slice_cost", int)):
            raw = env.get(name)
            if raw is None or not raw.strip():
                continue
            try:
                value = kind(raw)
            except ValueError:
                value = 0
            if not value > 0 or value != value or value == float("inf"):
                from civicml.errors import InvalidInput

                raise InvalidInput(f"{name} must be a positive number (got {raw!r})")
            values[field_name] = value
        return cls(**values)


def cache_dir() -> Path:
    """Where CivicML keeps what it can rebuild at will (``CIVICML_CACHE_DIR``, else ``$XDG_CACHE_HOME/civicml``,
    else ``~/.cache/civicml``): nothing in it is ever the only copy of anything, and deleting it is safe."""
    explicit = os.environ.get("CIVICML_CACHE_DIR")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "civicml"


def console_endpoints(env: dict[str, str] | None = None) -> list[str]:
    """``CIVICML_CONSOLE_ENDPOINTS``: the live endpoints' base URLs the console reads (comma-separated)."""
    raw = (os.environ if env is None else env).get("CIVICML_CONSOLE_ENDPOINTS", "")
    return [url.strip() for url in raw.split(",") if url.strip()]
