"""An endpoint: a registered model followed through an alias, served by a named runtime.

When the alias moves (a promotion or a rollback), the endpoint loads the new
version beside the old one and swaps atomically; requests in flight finish on
the version they started with. Endpoints are stateless beyond that cache, so
more replicas scale out behind any load balancer.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from civicml.settings import Settings
from registry import resolve
from registry.store import ModelStore
from serving.dataplane import InferenceRequest, prepare
from serving.runtime import Runtime, get_runtime

log = logging.getLogger("civicml.serving")


@dataclass(frozen=True)
class Served:
    """What answered a request: echoed in every response."""

    name: str
    version: str
    alias: str
    runtime: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "alias": self.alias, "runtime": self.runtime}


class Endpoint:
    def __init__(self, model_name: str, alias: str = "champion", runtime: str = "pyfunc",
                 settings: Settings | None = None, refresh_seconds: float = 10.0):
        self.model_name = model_name
        self.alias = alias
        self.runtime_name = runtime
        self.settings = settings or Settings.from_env()
        self.refresh_seconds = refresh_seconds
        self._current: tuple[Served, Runtime] | None = None
        self._swap = threading.Lock()
        self._stop = threading.Event()
        self._follower: threading.Thread | None = None
        self.last_error: str | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def load(self) -> Served:
        """Resolve the alias and load its version (again only if it moved)."""
        with self._swap:
            ref = self.alias
            version = ModelStore(self.settings).by_alias(self.model_name, ref) if not ref.isdigit() else None
            wanted = version.version if version else ref
            if self._current and self._current[0].version == wanted:
                return self._current[0]
            local = resolve(self.model_name, wanted, settings=self.settings)
            runtime = get_runtime(self.runtime_name, local)
            runtime.load()
            served = Served(self.model_name, local.version.version, self.alias, runtime.name)
            old, self._current = self._current, (served, runtime)
            if old:  # requests in flight still hold the old runtime; it is freed with its last reference
                log.info("alias %s of %s moved: version %s -> %s", self.alias, self.model_name,
                         old[0].version, served.version)
            return served

    def follow(self) -> None:
        """Poll the registry in the background and reload when the alias moves."""
        if self._follower or self.refresh_seconds <= 0:
            return

        def loop():
            while not self._stop.wait(self.refresh_seconds):
                try:
                    self.load()
                    self.last_error = None
                except Exception as err:  # keep serving the loaded version
                    self.last_error = f"{type(err).__name__}: {err}"
                    log.warning("could not refresh %s@%s: %s", self.model_name, self.alias, self.last_error)

        self._follower = threading.Thread(target=loop, name=f"follow-{self.model_name}", daemon=True)
        self._follower.start()

    def close(self) -> None:
        self._stop.set()
        if self._current:
            self._current[1].unload()
            self._current = None

    # -- data plane -------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self._current is not None

    @property
    def served(self) -> Served | None:
        return self._current[0] if self._current else None

    def signature(self):
        return self._current[1].signature if self._current else None

    def predict(self, payload: Any, params: dict | None = None) -> tuple[Any, Served]:
        if self._current is None:
            self.load()
        served, runtime = self._current  # one consistent pair, even if a swap happens meanwhile
        request: InferenceRequest = prepare(payload, params, runtime.signature, runtime.metadata)
        started = time.perf_counter()
        output = runtime.predict(request.data, request.params)
        log.debug("predicted %s rows in %.1f ms", getattr(request.data, "shape", ["?"])[0],
                  (time.perf_counter() - started) * 1000)
        return output, served
