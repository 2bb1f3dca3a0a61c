"""The one place that calls MLflow's Model Registry API.

:class:`ModelStore` registers versions (with checksum and lineage tags), moves
aliases, keeps the audit trail as registered-model tags, and hands out verified
local copies of model artifacts.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import mlflow
from mlflow.exceptions import MlflowException, RestException

from civicml.errors import CivicMLError, IntegrityError, InvalidInput, NotFound, Unavailable
from civicml.settings import Settings
from civicml.tracking import configure
from registry.checksum import tree_sha256

TAG_SHA = "civicml.sha256"
AUDIT_PREFIX = "civicml.audit."
AUDIT_MAX_CHARS = 5000


ArtifactsUnavailable = Unavailable  # the artifact store did not answer (S3 down, wrong endpoint)


def _unreadable(what: str, err: BaseException) -> CivicMLError:
    if isinstance(err, MlflowException) and _not_found(err) or isinstance(err, FileNotFoundError):
        return NotFound(f"{what}: not found ({_short(err, 200)})")
    return ArtifactsUnavailable(f"{what}: the artifact store did not answer ({_short(err)})")


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    run_id: str | None
    source: str
    aliases: tuple[str, ...]
    tags: dict[str, str]
    created: int  # ms since epoch
    description: str | None = None

    @property
    def sha256(self) -> str | None:
        return self.tags.get(TAG_SHA)


@dataclass(frozen=True)
class LocalModel:
    """A verified local copy of a registered version: what serving loads."""

    version: ModelVersion
    path: Path
    metadata: dict[str, Any] = field(default_factory=dict)


def _not_found(err: MlflowException) -> bool:
    code = getattr(err, "error_code", "") or ""
    return "RESOURCE_DOES_NOT_EXIST" in code or "NOT_FOUND" in code or "not found" in str(err).lower()


class ModelStore:
    def __init__(self, settings: Settings | None = None):
        self.settings = settings or Settings.from_env()
        self.client = configure(self.settings)

    # -- versions ---------------------------------------------------------------------------
    def _version(self, mv) -> ModelVersion:
        return ModelVersion(mv.name, str(mv.version), mv.run_id, mv.source, tuple(getattr(mv, "aliases", []) or ()),
                            dict(mv.tags or {}), int(mv.creation_timestamp or 0), mv.description)

    def get_version(self, name: str, version: str | int) -> ModelVersion:
        try:
            return self._version(self.client.get_model_version(name, str(version)))
        except MlflowException as err:
            if _not_found(err):
                self.get_model(name)
                raise NotFound(f"model '{name}' has no version {version}") from None
            raise

    def get_model(self, name: str):
        try:
            return self.client.get_registered_model(name)
        except MlflowException as err:
            if _not_found(err):
                raise NotFound(f"no registered model named '{name}'") from None
            raise

    def by_alias(self, name: str, alias: str) -> ModelVersion:
        self.get_model(name)
        try:
            return self._version(self.client.get_model_version_by_alias(name, alias))
        except MlflowException as err:
            if _not_found(err) or "alias" in str(err).lower():
                raise NotFound(f"model '{name}' has no alias '{alias}'") from None
            raise

    def alias_or_none(self, name: str, alias: str) -> ModelVersion | None:
        try:
            return self.by_alias(name, alias)
        except NotFound:
            return None

    def versions(self, name: str) -> list[ModelVersion]:
        self.get_model(name)
        found = self.client.search_model_versions(f"name = '{name}'")
        # search results may omit aliases on some stores: read them from the registered model
        aliases: dict[str, list[str]] = {}
        for alias, version in (self.get_model(name).aliases or {}).items():
            aliases.setdefault(str(version), []).append(alias)
        out = [self._version(mv) for mv in found]
        out = [ModelVersion(v.name, v.version, v.run_id, v.source, tuple(sorted(aliases.get(v.version, ()))),
                            v.tags, v.created, v.description) for v in out]
        return sorted(out, key=lambda v: int(v.version))

    def models(self) -> list[str]:
        return sorted(m.name for m in self.client.search_registered_models())

    def register(self, model_uri: str, name: str, tags: dict[str, str] | None = None,
                 description: str | None = None,
                 complete: Callable[[ModelVersion], None] | None = None) -> ModelVersion:
        """Register ``model_uri`` as a new version of ``name`` with its checksum and ``tags``.

        The checksum is computed from a downloaded copy before anything is created;
        if any step after the version's creation fails, the version is deleted (and
        the registered model too if this call created it), so a version is either
        complete or not there. ``complete`` runs the caller's further steps (model
        card, alias, audit record) inside that guarantee.
        """
        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp)
            except (MlflowException, OSError) as err:
                raise _unreadable(f"cannot read model artifacts at {model_uri}", err) from None
            sha = tree_sha256(local)
        created_model = False
        try:
            self.client.get_registered_model(name)
        except MlflowException as err:
            if not _not_found(err):
                raise
            try:
                self.client.create_registered_model(name)
                created_model = True
            except MlflowException:  # created concurrently
                pass
        all_tags = {**(tags or {}), TAG_SHA: sha}
        try:
            model_id = model_uri.split("/")[1] if model_uri.startswith("models:/m-") else None
            mv = self.client.create_model_version(name, model_uri, run_id=self.run_id_of(model_uri),
                                                  tags=all_tags, description=description, model_id=model_id,
                                                  await_creation_for=0)
        except BaseException:
            if created_model:
                self._delete_model_quietly(name)
            raise
        try:
            for _ in range(600):
                status = self.client.get_model_version(name, mv.version).status
                if status != "PENDING_REGISTRATION":
                    break
                time.sleep(0.1)
            if status != "READY":
                raise MlflowException(f"version {mv.version} ended in status {status}")
            if complete is not None:
                complete(self.get_version(name, mv.version))
        except BaseException:
            self.discard(name, str(mv.version), created_model)
            raise
        return self.get_version(name, mv.version)

    def discard(self, name: str, version: str, created_model: bool = False) -> None:
        """Undo a registration that could not complete: delete the version (and a model this call made)."""
        try:
            self.client.delete_model_version(name, version)
        except MlflowException:
            pass
        if created_model:
            self._delete_model_quietly(name)

    def _delete_model_quietly(self, name: str) -> None:
        try:
            if not self.client.search_model_versions(f"name = '{name}'"):
                self.client.delete_registered_model(name)
        except MlflowException:
            pass

    def get_run(self, run_id: str, what: str = "run"):
        try:
            return self.client.get_run(run_id)
        except MlflowException as err:
            if _not_found(err):
                raise NotFound(f"cannot read model artifacts at {what}: no run {run_id}") from None
            raise

    def run_id_of(self, model_uri: str) -> str | None:
        return _run_id_of(model_uri, self.client)

    def set_description(self, name: str, version: str, text: str) -> None:
        self.client.update_model_version(name, version, description=text[:4900])

    def download_uri(self, name: str, version: str) -> str:
        """Where the version's artifacts really are (a file, s3 or mlflow-artifacts URI)."""
        return self.client.get_model_version_download_uri(name, str(version))

    # -- run artifacts (model cards) ----------------------------------------------------------
    def log_run_text(self, run_id: str, text: str, path: str) -> str:
        try:
            self.client.log_text(run_id, text, path)
        except (MlflowException, OSError) as err:
            raise ArtifactsUnavailable(f"cannot write {path} to run {run_id}: {_short(err)}") from None
        return f"runs:/{run_id}/{path}"

    def read_run_text(self, uri: str) -> str:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)
            except (MlflowException, OSError) as err:
                raise _unreadable(f"cannot read {uri}", err) from None
            return Path(local).read_text()

    def set_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self.client.set_model_version_tag(name, version, key, value)

    # -- aliases ----------------------------------------------------------------------------
    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.get_version(name, version)
        self.client.set_registered_model_alias(name, alias, str(version))

    def delete_alias(self, name: str, alias: str) -> None:
        self.client.delete_registered_model_alias(name, alias)

    # -- audit trail ------------------------------------------------------------------------
    def append_audit(self, name: str, record: dict[str, Any]) -> str:
        """Append one record; keys sort by time, so the trail reads in order. Never overwritten.

        Registered-model tag values hold at most 5000 characters on SQL stores: a
        record that would not fit loses its gates' free-text details, and failing
        that is refused (rather than cut).
        """
        now = time.time_ns()
        key = f"{AUDIT_PREFIX}{time.strftime('%Y%m%dT%H%M%S', time.gmtime(now / 1e9))}.{now % 10**9:09d}." \
              f"{uuid.uuid4().hex[:6]}"
        text = json.dumps(record, sort_keys=True, default=str, separators=(",", ":"))
        if len(text) > AUDIT_MAX_CHARS and record.get("gates"):
            slim = {**record, "gates": [{k: v for k, v in g.items() if k != "detail"} for g in record["gates"]]}
            text = json.dumps(slim, sort_keys=True, default=str, separators=(",", ":"))
        if len(text) > AUDIT_MAX_CHARS:
            raise InvalidInput(f"audit record of {len(text)} characters exceeds {AUDIT_MAX_CHARS}")
        self.client.set_registered_model_tag(name, key, text)
        return key

    def audit_records(self, name: str) -> list[dict[str, Any]]:
        tags = self.get_model(name).tags or {}
        return [json.loads(tags[k]) for k in sorted(k for k in tags if k.startswith(AUDIT_PREFIX))]

    # -- artifacts --------------------------------------------------------------------------
    def fetch(self, name: str, version: ModelVersion) -> LocalModel:
        """Download ``version`` into the local cache, verify its checksum, return its path."""
        cache = self.settings.home / "cache" / "models" / name / version.version
        if cache.exists():
            shutil.rmtree(cache)
        cache.parent.mkdir(parents=True, exist_ok=True)
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version.version}",
                                                             dst_path=str(cache)))
        except (MlflowException, OSError) as err:
            raise _unreadable(f"cannot download model '{name}' version {version.version}", err) from None
        expected = version.sha256
        if expected is None:
            raise IntegrityError(f"model '{name}' version {version.version} has no recorded checksum; "
                                 f"register it through CivicML")
        actual = tree_sha256(local)
        if actual != expected:
            raise IntegrityError(f"checksum mismatch for model '{name}' version {version.version}: "
                                 f"recorded {expected[:12]}..., artifacts give {actual[:12]}...; refusing to load")
        metadata = {}
        mlmodel = local / "MLmodel"
        if mlmodel.exists():
            import yaml

            metadata = (yaml.safe_load(mlmodel.read_text()) or {}).get("metadata") or {}
        return LocalModel(version, local, metadata)


def _run_id_of(model_uri: str, client) -> str | None:
    if model_uri.startswith("runs:/"):
        return model_uri.split("/")[1]
    if model_uri.startswith("models:/m-"):
        try:
            return client.get_logged_model(model_uri.split("/")[1]).source_run_id
        except (MlflowException, RestException, AttributeError):
            return None
    return None


def _short(err: BaseException, limit: int = 300) -> str:
    """One line of an error from MLflow or boto (they can be pages long)."""
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[:limit] + " ..."


def validate_alias(alias: str) -> str:
    if not alias or not alias.replace("-", "").replace("_", "").isalnum() or alias.isdigit():
        raise InvalidInput(f"invalid alias '{alias}': use letters, digits, '-' or '_', not only digits")
    return alias
