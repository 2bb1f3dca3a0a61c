"""One typed settings object per process, read from the environment once.

Every environment variable CivicML reads is declared here and nowhere else.

==========================  ============================================  =========================
variable                    meaning                                       default
==========================  ============================================  =========================
``CIVICML_HOME``            working folder of the embedded default        ``./civicml-home``
``CIVICML_TRACKING_URI``    MLflow tracking + registry URI (else          ``sqlite:///$HOME/mlflow.db``
                            ``MLFLOW_TRACKING_URI``)
``CIVICML_ARTIFACT_ROOT``   where new experiments keep artifacts          ``$HOME/artifacts`` (embedded)
``CIVICML_OPTUNA_STORAGE``  Optuna storage URI                            ``sqlite:///$HOME/optuna.db``
``CIVICML_USER``            who is acting (recorded in audit records)     the OS user
==========================  ============================================  =========================
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

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides) -> "Settings":
        env = dict(os.environ if env is None else env)
        home = Path(overrides.pop("home", None) or env.get("CIVICML_HOME") or "civicml-home").resolve()
        # MLFLOW_TRACKING_URI is honoured too: `mlflow run` hands it to the entry point it starts.
        tracking_uri = (overrides.pop("tracking_uri", None) or env.get("CIVICML_TRACKING_URI")
                        or env.get("MLFLOW_TRACKING_URI"))
        artifact_root = overrides.pop("artifact_root", None) or env.get("CIVICML_ARTIFACT_ROOT")
        if not tracking_uri:
            tracking_uri = f"sqlite:///{home / 'mlflow.db'}"
        if tracking_uri.startswith("sqlite:///") and not artifact_root:
            artifact_root = (Path(tracking_uri[len("sqlite:///"):]).parent / "artifacts").as_uri()
        storage = overrides.pop("optuna_storage", None) or env.get("CIVICML_OPTUNA_STORAGE")
        storage = storage or f"sqlite:///{home / 'optuna.db'}"
        user = overrides.pop("user", None) or env.get("CIVICML_USER") or _os_user()
        if overrides:
            raise TypeError(f"unknown settings: {sorted(overrides)}")
        return cls(home=home, tracking_uri=tracking_uri, artifact_root=artifact_root,
                   optuna_storage=storage, user=user)

    @property
    def embedded(self) -> bool:
        return self.tracking_uri.startswith("sqlite:") or self.tracking_uri.startswith("file:")

    def with_(self, **changes) -> "Settings":
        return replace(self, **changes)

    def ensure_home(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        return self.home
