"""The one place that calls MLflow's Model Registry API.

:class:`ModelStore` registers versions (with checksum and lineage tags), moves
aliases, keeps the audit trail as registered-model tags, and hands out verified
local copies of model artifacts.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import mlflow
from mlflow.exceptions import MlflowException, RestException
from mlflow.tracking import MlflowClient

from civicml.errors import CivicMLError, IntegrityError, InvalidInput, NotFound, Unavailable
from civicml.settings import Settings
from civicml.sqlite import database_file
from civicml.tracking import fluent, tracking_client
from civicml.tags import AUDIT_PREFIX, TAG_MANIFEST, TAG_REGISTRATION, TAG_SHA256, TAG_SIGNATURE
from registry import checksum

AUDIT_MAX_CHARS = 5000
MANIFEST_CHUNK = 4500
STALE_PENDING_SECONDS = 3600  # a registration pending this long on another host is taken as dead

# MLflow error codes (``MlflowException.error_code``) that mean "no such thing"
NOT_FOUND_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "ENDPOINT_NOT_FOUND"})


log = logging.getLogger("civicml.registry")

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
        return self.tags.get(TAG_SHA256)

    @property
    def manifest(self) -> dict[str, str] | None:
        """The recorded per-file digests (None for versions registered before manifests were kept)."""
        text = _joined(self.tags, TAG_MANIFEST)
        return None if text is None else checksum.decode(text)

    @property
    def signature(self) -> dict | None:
        """The signature recorded at registration (MLmodel's ``signature`` mapping; None: the model has none).

        Raises ``KeyError`` for a version registered before signatures were recorded."""
        text = _joined(self.tags, TAG_SIGNATURE)
        if text is None:
            raise KeyError(TAG_SIGNATURE)
        return json.loads(text)

    @property
    def pending(self) -> bool:
        """Registered, but its registration has not (yet) completed every step."""
        return str(self.tags.get(TAG_REGISTRATION, "complete")).startswith("pending")


@dataclass(frozen=True)
class LocalModel:
    """A verified private copy of a registered version: what serving and the gates load.

    ``added`` names files found beside the recorded ones (left out of the copy, not loaded)."""

    version: ModelVersion
    path: Path
    metadata: dict[str, Any] = field(default_factory=dict)
    added: tuple[str, ...] = ()


def _not_found(err: MlflowException) -> bool:
    return (getattr(err, "error_code", "") or "") in NOT_FOUND_CODES


def _chunked(prefix: str, text: str) -> dict[str, str]:
    """``text`` as tags ``prefix.0``, ``prefix.1``, ... (a tag value holds at most 5000 characters on SQL stores)."""
    return {f"{prefix}.{i}": text[at:at + MANIFEST_CHUNK]
            for i, at in enumerate(range(0, max(len(text), 1), MANIFEST_CHUNK))}


def _joined(tags: dict[str, str], prefix: str) -> str | None:
    if prefix + ".0" not in tags:
        return None
    parts, i = [], 0
    while f"{prefix}.{i}" in tags:
        parts.append(tags[f"{prefix}.{i}"])
        i += 1
    return "".join(parts)


def manifest_tags(files: dict[str, str]) -> dict[str, str]:
    return _chunked(TAG_MANIFEST, checksum.encode(files))


def signature_tags(root: Path) -> dict[str, str]:
    """The model's signature as registration records it: the contract its consumers rely on, read from the
    registry (never from files that may have changed since) when a later version would replace it."""
    import yaml

    signature = (yaml.safe_load((root / "MLmodel").read_text()) or {}).get("signature")
    return _chunked(TAG_SIGNATURE, json.dumps(signature, sort_keys=True, separators=(",", ":")))


def pending_marker() -> str:
    return f"pending:{socket.gethostname()}:{os.getpid()}:{int(time.time())}"


def registration_is_dead(marker: str, now: float | None = None) -> bool:
    """Whether the registration that left ``marker`` can no longer finish (its process is gone)."""
    try:
        _, host, pid, started = marker.split(":", 3)
        pid, started = int(pid), int(started)
    except ValueError:
        return True
    if host == socket.gethostname():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    return (now or time.time()) - started > STALE_PENDING_SECONDS


class ModelStore:
    """One store's registry, through its own :class:`MlflowClient`: nothing process-global is set, so two
    stores (two homes, or a home and a team server) in one process never cross."""

    def __init__(self, settings: Settings | None = None):
        self.settings = settings or Settings.from_env()
        self._client: MlflowClient | None = None

    @property
    def client(self) -> MlflowClient:
        """This store's client, opened on first use: an embedded store (the home, its database) is created
        only by a command that uses it, never by one that finds nothing to read (see :meth:`get_model`)."""
        if self._client is None:
            self._client = tracking_client(self.settings)  # creates the embedded store if need be
        return self._client

    def _never_created(self) -> bool:
        """Whether this is an embedded SQLite store whose database does not exist yet: it holds no model."""
        path = None if self._client is not None else database_file(self.settings.tracking_uri)
        return path is not None and not path.exists()

    def download(self, uri: str, dst: str | Path) -> Path:
        """Download ``uri`` (runs:/, models:/m-..., models:/NAME/N, a file, s3 or mlflow-artifacts URI) from this
        store. ``models:/`` URIs are resolved through this store's client: MLflow would resolve them through the
        process-wide registry URI."""
        if uri.startswith("models:/"):
            uri = self._underlying(uri)
        # a runs:/ URI of a logged model is resolved inside MLflow through the process-wide tracking URI,
        # whatever tracking_uri says: point that at this store for the call (else ./mlflow.db, "not found")
        with fluent(self.settings):
            return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst),
                                                            tracking_uri=self.settings.tracking_uri,
                                                            registry_uri=self.settings.tracking_uri))

    def _underlying(self, uri: str) -> str:
        ref, _, sub = uri[len("models:/"):].partition("/")
        if ref.startswith("m-"):
            base = self.client.get_logged_model(ref).artifact_location
        elif "@" in ref:
            name, alias = ref.split("@", 1)
            base = self.download_uri(name, self.by_alias(name, alias).version)
        else:
            base, sub = self.download_uri(ref, sub.partition("/")[0]), sub.partition("/")[2]
        return base.rstrip("/") + ("/" + sub if sub else "")

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
        if self._never_created():  # reading must not create the home or its database
            raise NotFound(f"no registered model named '{name}'")
        try:
            return self.client.get_registered_model(name)
        except MlflowException as err:
            if _not_found(err):
                raise NotFound(f"no registered model named '{name}'") from None
            raise

    def exists(self, name: str) -> bool:
        try:
            self.get_model(name)
            return True
        except NotFound:
            return False

    def aliases(self, name: str) -> dict[str, str]:
        return {a: str(v) for a, v in (self.get_model(name).aliases or {}).items()}

    def model_tags(self, name: str) -> dict[str, str]:
        return dict(self.get_model(name).tags or {})

    def set_model_tag(self, name: str, key: str, value: str) -> None:
        self.client.set_registered_model_tag(name, key, value)

    def by_alias(self, name: str, alias: str) -> ModelVersion:
        self.get_model(name)
        try:
            return self._version(self.client.get_model_version_by_alias(name, alias))
        except MlflowException as err:
            # the model exists (checked above): SQL stores answer a missing alias with INVALID_PARAMETER_VALUE
            if _not_found(err) or err.error_code == "INVALID_PARAMETER_VALUE":
                raise NotFound(f"model '{name}' has no alias '{alias}'") from None
            raise

    def version_at(self, name: str, ref: str | int) -> ModelVersion:
        """``name``'s version at ``ref``: a version number (:func:`is_version_number`), else an alias. The one
        rule for "number or alias"; it holds because :func:`validate_alias` refuses all-digit aliases."""
        return self.get_version(name, ref) if is_version_number(ref) else self.by_alias(name, str(ref))

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
        for alias, version in self.aliases(name).items():
            aliases.setdefault(str(version), []).append(alias)
        out = [self._version(mv) for mv in found]
        out = [ModelVersion(v.name, v.version, v.run_id, v.source, tuple(sorted(aliases.get(v.version, ()))),
                            v.tags, v.created, v.description) for v in out]
        return sorted(out, key=lambda v: int(v.version))

    def models(self) -> list[str]:
        if self._never_created():
            return []
        return sorted(m.name for m in self.client.search_registered_models())

    def register(self, model_uri: str, name: str, tags: dict[str, str] | None = None,
                 description: str | None = None,
                 complete: Callable[[ModelVersion], None] | None = None) -> ModelVersion:
        """Register ``model_uri`` as a new version of ``name`` with its manifest, digest and ``tags``.

        The digests are computed from a downloaded copy before anything is created
        (:mod:`registry.checksum`, the same functions every load uses). The version
        carries ``civicml.registration=pending:...`` until ``complete`` (the caller's
        further steps: model card, alias, audit record) has run; if any step fails the
        version is deleted (and the registered model too if this call created it). A
        process killed in between leaves a pending version that the next registry
        command removes (:meth:`half_registered`).
        """
        validate_name(name, "model name")
        digests = self._digests(model_uri)
        created_model = self._ensure_model(name)
        all_tags = {**(tags or {}), **digests, TAG_REGISTRATION: pending_marker()}
        try:
            model_id = model_uri.split("/")[1] if model_uri.startswith("models:/m-") else None
            # MLflow's SQL registry store looks up a models:/m-... or runs:/ source through the process-wide
            # tracking URI, not its client's (a TODO in SqlAlchemyStore.create_model_version)
            with fluent(self.settings):
                mv = self.client.create_model_version(name, model_uri, run_id=self.run_id_of(model_uri),
                                                      tags=all_tags, description=description, model_id=model_id,
                                                      await_creation_for=0)
        except BaseException:
            if created_model:
                self._delete_model_quietly(name)
            raise
        try:
            self._wait_until_ready(name, mv.version)
            if complete is not None:
                complete(self.get_version(name, mv.version))
            self.client.set_model_version_tag(name, str(mv.version), TAG_REGISTRATION, "complete")
        except BaseException:
            self.discard(name, str(mv.version), created_model)
            raise
        return self.get_version(name, mv.version)

    def _digests(self, model_uri: str) -> dict[str, str]:
        """The tags that bind a version to its files (digest, manifest, signature), from a downloaded copy."""
        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = self.download(model_uri, tmp)
            except (MlflowException, OSError) as err:
                raise _unreadable(f"cannot read model artifacts at {model_uri}", err) from None
            root = checksum.model_root(local)
            if not (root / "MLmodel").is_file():
                raise InvalidInput(f"{model_uri} is not an MLflow model (no MLmodel file)")
            return {TAG_SHA256: checksum.digest(root), **manifest_tags(checksum.manifest(root)),
                    **signature_tags(root)}

    def _ensure_model(self, name: str) -> bool:
        """Create the registered model if there is none; whether this call created it."""
        if self.exists(name):
            return False
        try:
            self.client.create_registered_model(name)
            return True
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":  # created concurrently: fine
                raise
            return False

    def _wait_until_ready(self, name: str, version) -> None:
        for _ in range(600):
            status = self.client.get_model_version(name, version).status
            if status != "PENDING_REGISTRATION":
                break
            time.sleep(0.1)
        if status != "READY":
            raise MlflowException(f"version {version} ended in status {status}")

    def half_registered(self, name: str) -> list[ModelVersion]:
        """Versions whose registration started but can never finish (its process died after the version row)."""
        if not self.exists(name):
            return []
        return [v for v in self.versions(name)
                if v.pending and registration_is_dead(v.tags.get(TAG_REGISTRATION, ""))]

    def discard(self, name: str, version: str, created_model: bool = False) -> None:
        """Undo a registration that could not complete: delete the version (and a model this call made), and
        everything its registration wrote: model cards and insights beside the run, the verified copy in
        the home's cache (:meth:`_remove_written`)."""
        run_id = None
        try:
            run_id = self.client.get_model_version(name, version).run_id
        except MlflowException:
            pass
        try:
            self.client.delete_model_version(name, version)
        except MlflowException:
            pass
        self._remove_written(name, str(version), run_id)
        if created_model:
            self._delete_model_quietly(name)

    def _remove_written(self, name: str, version: str, run_id: str | None) -> None:
        """Remove what registering ``version`` writes besides the version itself, by where it writes it:
        ``model_cards/<name>/v<N>-*.md`` (registry.lifecycle._store_card) and ``insights/<name>/v<N>/``
        (registry.rules.log_insights) in the run's artifacts, ``cache/models/<name>/<N>`` in the home.
        Version numbers are never reused, so nothing else lives there."""
        import posixpath

        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        shutil.rmtree(self.settings.home / "cache" / "models" / _safe(name) / version, ignore_errors=True)
        if not run_id:
            return
        folder = _safe(name)
        try:
            run = self.client.get_run(run_id)
            repo = get_artifact_repository(run.info.artifact_uri, tracking_uri=self.settings.tracking_uri)
            targets = [f.path for f in repo.list_artifacts(f"insights/{folder}")
                       if posixpath.basename(f.path) == f"v{version}"]
            targets += [f.path for f in repo.list_artifacts(f"model_cards/{folder}")
                        if posixpath.basename(f.path).startswith(f"v{version}-")]
            for path in targets:
                repo.delete_artifacts(path)
        except Exception as err:  # noqa: BLE001 - the version is gone; say what may be left beside its run
            log.warning("removed version %s of '%s', but not all files its registration wrote beside run %s: %s",
                        version, name, run_id, _short(err))

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

    def run_or_none(self, run_id: str | None):
        """The run, or None when it was deleted (a version outlives its run)."""
        if not run_id:
            return None
        try:
            return self.client.get_run(run_id)
        except MlflowException as err:
            if _not_found(err):
                return None
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
                local = self.download(uri, tmp)
            except (MlflowException, OSError) as err:
                raise _unreadable(f"cannot read {uri}", err) from None
            return Path(local).read_text()

    def set_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self.client.set_model_version_tag(name, version, key, value)

    # -- aliases ----------------------------------------------------------------------------
    def set_alias(self, name: str, alias: str, version: str) -> None:
        validate_alias(alias)
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
        tags = self.model_tags(name)
        return [json.loads(tags[k]) for k in sorted(k for k in tags if k.startswith(AUDIT_PREFIX))]

    # -- artifacts --------------------------------------------------------------------------
    def fetch(self, name: str, version: ModelVersion) -> LocalModel:
        """A private, verified copy of ``version``'s files under the home's cache; the store is only read.

        Refuses (:class:`IntegrityError`) when a recorded file changed or disappeared;
        files added since registration are left out of the copy and named in
        ``LocalModel.added``.
        """
        expected = version.sha256
        if expected is None:
            raise IntegrityError(f"model '{name}' version {version.version} has no recorded checksum; "
                                 f"register it through CivicML")
        cache = self.settings.home / "cache" / "models" / _safe(name)
        cache.mkdir(parents=True, exist_ok=True)
        target = cache / version.version
        staging = Path(tempfile.mkdtemp(prefix=f".{version.version}-", dir=cache))
        try:
            try:
                # the version's own artifact location, not a models:/ URI: MLflow writes bookkeeping into those
                local = self.download(self.download_uri(name, version.version), staging)
            except (MlflowException, OSError) as err:
                raise _unreadable(f"cannot download model '{name}' version {version.version}", err) from None
            root = checksum.model_root(local)
            added = tuple(sorted(self._verify(name, version, root)))  # reported to the caller
            # MLflow's own bookkeeping (registered_model_meta, written where it registered the version) is left
            # out of the copy too, without a word: it is in every version, and never model content
            for rel in (*added, *checksum.bookkeeping(root)):  # never load what registration did not record
                path = root / rel
                path.unlink()
                while path.parent != root and not any(path.parent.iterdir()):
                    path = path.parent
                    path.rmdir()
            _swap_into_place(root, target, staging)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        metadata = {}
        mlmodel = target / "MLmodel"
        if mlmodel.exists():
            import yaml

            metadata = (yaml.safe_load(mlmodel.read_text()) or {}).get("metadata") or {}
        return LocalModel(version, target, metadata, added)

    def _verify(self, name: str, version: ModelVersion, root: Path) -> tuple[str, ...]:
        """Compare ``root`` with what registration recorded; the files added since (or raise)."""
        what = f"model '{name}' version {version.version}"
        recorded = version.manifest
        if recorded is None:  # registered before manifests: every file counts
            actual = checksum.digest(root)
            if actual != version.sha256:
                raise IntegrityError(f"checksum mismatch for {what}: recorded {version.sha256[:12]}..., artifacts "
                                     f"give {actual[:12]}...; refusing to load")
            return ()
        check = checksum.compare(recorded, checksum.manifest(root))
        if not check.intact:
            problems = [f"changed: {', '.join(check.changed)}" if check.changed else "",
                        f"missing: {', '.join(check.missing)}" if check.missing else ""]
            raise IntegrityError(f"checksum mismatch for {what} ({'; '.join(p for p in problems if p)}); "
                                 f"refusing to load")
        actual = checksum.digest(root, recorded)
        if actual != version.sha256:
            raise IntegrityError(f"checksum mismatch for {what}: recorded {version.sha256[:12]}..., artifacts give "
                                 f"{actual[:12]}...; refusing to load")
        return check.added


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


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


SAFE_NAME = re.compile(r"[A-Za-z0-9_-]{1,200}")  # ASCII only: look-alike letters (Cyrillic 'а') never pass


def validate_name(value: str, kind: str = "alias") -> str:
    """The one check of a model name or alias before anything is stored under it (CLI, Python API, console,
    HTTP all reach it through the registry's functions): ASCII letters, digits, '-' and '_' only, so no two
    names that read alike differ; an alias is never only digits (that would read as a version number)."""
    if kind not in ("alias", "model name"):
        raise ValueError(f"kind must be 'alias' or 'model name', got {kind!r}")
    text = value if isinstance(value, str) else ""
    if not SAFE_NAME.fullmatch(text) or (kind == "alias" and text.isdigit()):
        shown = ascii(value) if isinstance(value, str) else repr(value)
        digits = ", not only digits" if kind == "alias" else ""
        raise InvalidInput(f"invalid {kind} {shown}: use ASCII letters, digits, '-' or '_'{digits}")
    return value


def validate_alias(alias: str) -> str:
    return validate_name(alias, "alias")


def is_version_number(ref) -> bool:
    """Whether ``ref`` names a version (ASCII digits) rather than an alias."""
    return isinstance(ref, int) or (isinstance(ref, str) and ref.isascii() and ref.isdigit())


def _swap_into_place(root: Path, target: Path, staging: Path) -> None:
    """Put the verified copy ``root`` at ``target`` by renames only, never deleting a copy in place: loaders
    of the same version in other threads or processes may be reading it. An older copy is moved into
    ``staging`` (removed with it); when another loader put its own verified copy there first, that one stays."""
    import errno

    for attempt in range(5):
        try:
            target.rename(staging / f"previous-{attempt}")
        except FileNotFoundError:
            pass
        try:
            root.rename(target)
            return
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    if not target.is_dir():  # five other loaders in a row won each race: theirs is the same verified version
        raise OSError(errno.ENOTEMPTY, "cannot place the verified model copy", str(target))
