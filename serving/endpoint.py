"""An endpoint: a registered model followed through an alias, served by a named runtime.

Loading happens off the request path: the first load runs before the server reports ready, and
when the alias moves (a promotion or a rollback) the follower thread loads and warms the new
version beside the old one, then swaps one reference; requests keep being answered by the old
version meanwhile and requests in flight finish on the version they started with. A version that
fails to load, to verify or to warm up leaves the old one serving and ``last_error`` says why.
Endpoints are stateless beyond that cache, so more replicas scale out behind any load balancer.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import threading
import time
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from civicml.errors import InvalidInput
from civicml.settings import ServingLimits, Settings
from registry import TAG_RUNTIME, TAG_VARIANT, TAG_VARIANT_OF, find_variant, resolve, version_of
from serving.batching import BatchingRuntime, Overloaded, admit
from serving.dataplane import InferenceRequest, Validator
from serving.runtime import Runtime, get_runtime

log = logging.getLogger("civicml.serving")

LARGE_ROWS = 256  # requests with more rows are checked in a worker thread, not on the event loop


@dataclass(frozen=True)
class Served:
    """What answered a request: echoed in every response. A variant names its kind and its parent version
    (``variant_of``) beside its own version; ``alias`` is the parent's alias the endpoint follows."""

    name: str
    version: str
    alias: str
    runtime: str
    variant: str | None = None
    variant_of: str | None = None

    def to_dict(self) -> dict[str, str]:
        out = {"name": self.name, "version": self.version, "alias": self.alias, "runtime": self.runtime}
        if self.variant:
            out["variant"] = self.variant
            out["variant_of"] = self.variant_of
        return out


@dataclass(frozen=True)
class Loaded:
    """One loaded version: what it is, how it runs, how its inputs are checked. Swapped as one reference."""

    served: Served
    runtime: Runtime
    validator: Validator
    loaded_at: float


class Endpoint:
    def __init__(self, model_name: str, alias: str = "champion", runtime: str = "pyfunc",
                 settings: Settings | None = None, refresh_seconds: float = 10.0, variant: str | None = None,
                 max_batch: int = 64, max_wait_ms: float = 1.0, batching: bool = True,
                 on_event: Callable[[str, dict], None] | None = None, key: str | None = None):
        self._key = key
        # admission control (cost per request, deadline, slices): set by create_app; None: from the environment
        self.limits: ServingLimits | None = None
        self.model_name = model_name
        self.alias = alias
        self.runtime_name = runtime
        self.variant = variant
        self.settings = settings or Settings.from_env()
        self.refresh_seconds = refresh_seconds
        self.max_batch = max_batch
        self.max_wait_ms = max_wait_ms
        self.batching = batching
        self.on_event = on_event  # metrics hooks: ("load", {...}), ("load_failed", {...}), ("batch", {...})
        self._current: Loaded | None = None
        self._swap = threading.Lock()
        self._stop = threading.Event()
        self._follower: threading.Thread | None = None
        self.last_error: str | None = None
        # a canary or shadow version beside the champion (registry.rollout), and its recent requests
        self.rollout = None
        self._canary: Loaded | None = None
        self._canary_error: str | None = None  # the latest exception of the canary, for the rollback's audit record
        self._canary_window: collections.deque = collections.deque(maxlen=50)
        self._rng = random.Random()
        self.shadow_counts = {"agree": 0, "total": 0}
        self.rolled_back: str | None = None  # why the last canary was stopped automatically

    @property
    def key(self) -> str:
        """The name clients use for this endpoint on a server with several (V2 model name)."""
        if self._key:
            return self._key
        return self.model_name if self.alias == "champion" else f"{self.model_name}@{self.alias}"

    def _event(self, kind: str, **data) -> None:
        if self.on_event is not None:
            try:
                self.on_event(kind, {"model": self.model_name, **data})
            except Exception:  # metrics must never break serving
                log.exception("event hook failed")

    # -- lifecycle --------------------------------------------------------------------------
    def _wanted(self) -> tuple[str, str | None, str]:
        """(version to load, variant kind, runtime name) for the alias now.

        With ``variant``, the alias still names the parent: the version loaded is that parent's variant of
        this kind whose gate passed (:func:`registry.variants.find_variant`); none is a ``NotFound``, never
        the parent instead. A ``runtime`` other than ``pyfunc`` is the caller's choice and wins over the
        runtime the variant was registered for."""
        return self._choice(version_of(self.model_name, self.alias, settings=self.settings).version)

    def _choice(self, version: str) -> tuple[str, str | None, str]:
        """(version to load, variant kind, runtime name) for parent ``version``: itself, or its variant."""
        if not self.variant:
            return version, None, self.runtime_name
        found = find_variant(self.model_name, version, self.variant, settings=self.settings)
        runtime = self.runtime_name if self.runtime_name != "pyfunc" else \
            (found.tags or {}).get(TAG_RUNTIME) or self.runtime_name
        return found.version, self.variant, runtime

    def load(self) -> Served:
        """Resolve the alias and load, check and warm its version (again only if it moved)."""
        with self._swap:
            version, variant, runtime_name = self._wanted()
            current = self._current
            if current and current.served.version == version:
                return current.served
            started = time.perf_counter()
            try:
                loaded = self._load(version, variant, runtime_name)
            except Exception as err:
                self._event("load_failed", version=version, error=f"{type(err).__name__}: {err}")
                raise
            seconds = time.perf_counter() - started
            self._current = loaded  # one reference: the request path never waits for a load
            _freeze_heap()
            self._event("load", version=version, seconds=seconds)
            if current:  # requests in flight still hold the old runtime; stop its batch worker afterwards
                log.info("alias %s of %s moved: version %s -> %s (loaded in %.2f s)", self.alias, self.model_name,
                         current.served.version, version, seconds)
                threading.Timer(30.0, current.runtime.unload).start()
            return loaded.served

    def _load(self, version: str, variant: str | None, runtime_name: str) -> Loaded:
        local = resolve(self.model_name, version, settings=self.settings)  # verifies the checksum
        runtime = get_runtime(runtime_name, local)
        runtime.load()
        if self.batching:
            runtime = BatchingRuntime(runtime, self.max_batch, self.max_wait_ms, on_batch=self._on_batch,
                                      slice_cost=self._limits().slice_cost)
        validator = Validator(runtime.signature, runtime.metadata)
        _warm_up(runtime, validator, local.path, self.max_batch)
        tags = local.version.tags or {}  # a variant says what it is, however it was reached
        kind = tags.get(TAG_VARIANT) or variant
        served = Served(self.model_name, local.version.version, self.alias, runtime.name, kind,
                        tags.get(TAG_VARIANT_OF) if kind else None)
        return Loaded(served, runtime, validator, time.time())

    def _limits(self) -> ServingLimits:
        if self.limits is None:
            self.limits = ServingLimits.from_env()
        return self.limits

    def _on_batch(self, rows: int, seconds: float) -> None:
        self._event("batch", rows=rows, seconds=seconds)

    def refresh(self) -> bool:
        """Follow the alias and the roll-out once; on failure keep what is loaded and remember why."""
        try:
            self.load()
            self.refresh_rollout()
            self.last_error = None
            return True
        except Exception as err:  # keep serving the loaded version
            self.last_error = f"{type(err).__name__}: {err}"
            log.warning("could not refresh %s@%s: %s", self.model_name, self.alias, self.last_error)
            return False

    def refresh_rollout(self) -> None:
        """Read the roll-out from the registry; load its version beside the champion (or drop it)."""
        from registry import rollout as rollouts

        wanted = rollouts.current(self.model_name, self.settings) if self.alias == "champion" else None
        served = self._current.served if self._current else None
        champion = (served.variant_of or served.version) if served else None  # a roll-out names parent versions
        if wanted is None or wanted.version == champion:
            self.rollout, self._canary = None, None
            self._event("rollout", version=None, weight=0)
            return
        version, variant, runtime_name = self._choice(wanted.version)  # its variant too: raises if it has none
        if self._canary is None or self._canary.served.version != version:
            loaded = self._load(version, variant, runtime_name)  # raises: keep serving without it
            self._canary = Loaded(dataclasses.replace(loaded.served, alias=wanted.mode), loaded.runtime,
                                  loaded.validator, loaded.loaded_at)
            self._canary_window = collections.deque(maxlen=wanted.window)
        self.rollout = wanted
        self._event("rollout", version=wanted.version, weight=wanted.weight)

    def _canary_result(self, failed: bool, seconds: float) -> None:
        rollout, window = self.rollout, self._canary_window
        if rollout is None:
            return
        window.append((failed, seconds))
        if len(window) < window.maxlen:
            return
        errors = sum(f for f, _ in window) / len(window)
        p95 = sorted(t for _, t in window)[int(0.95 * (len(window) - 1))] * 1000
        why = None
        if errors > rollout.max_error_rate:
            why = f"error rate {errors:.0%} over the last {len(window)} requests (limit {rollout.max_error_rate:.0%})"
        elif rollout.max_p95_ms is not None and p95 > rollout.max_p95_ms:
            why = f"p95 {p95:.0f} ms over the last {len(window)} requests (limit {rollout.max_p95_ms:.0f} ms)"
        if why is None:
            return
        version = self._canary.served.version if self._canary else rollout.version
        self.rollout, self._canary = None, None  # this replica stops at once; the registry tells the others
        self.rolled_back = f"version {version}: {why}" + (f"; last failure: {self._canary_error}"
                                                           if self._canary_error else "")
        log.warning("automatic rollback of the %s of %s: %s", rollout.mode, self.model_name, self.rolled_back)
        self._event("rollback", version=version, reason=why)

        def record():
            from registry import rollout as rollouts

            try:
                rollouts.stop(self.model_name, f"automatic: {self.rolled_back}", automatic=True, settings=self.settings)
            except Exception as err:
                log.error("could not record the automatic rollback: %s", err)

        threading.Thread(target=record, name="rollback", daemon=True).start()

    def follow(self) -> None:
        """Poll the registry in the background and reload when the alias moves."""
        if self._follower or self.refresh_seconds <= 0:
            return

        def loop():
            while not self._stop.wait(self.refresh_seconds):
                self.refresh()

        self._follower = threading.Thread(target=loop, name=f"follow-{self.model_name}", daemon=True)
        self._follower.start()

    def close(self) -> None:
        self._stop.set()
        if self._current:
            self._current.runtime.unload()
            self._current = None

    # -- data plane -------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self._current is not None

    @property
    def served(self) -> Served | None:
        return self._current.served if self._current else None

    @property
    def current(self) -> Loaded | None:
        return self._current

    def signature(self):
        return self._current.runtime.signature if self._current else None

    def _loaded(self) -> Loaded:
        if self._current is None:
            self.load()
        return self._current

    def predict(self, payload: Any, params: dict | None = None) -> tuple[Any, Served]:
        loaded = self._loaded()  # one consistent version, even if a swap happens meanwhile
        request: InferenceRequest = loaded.validator.prepare(payload, checked_params(loaded.runtime, params))
        return _call(loaded.runtime, request.data, request.params), loaded.served

    async def apredict(self, payload: Any, params: dict | None = None) -> tuple[Any, Served, Loaded]:
        """The HTTP hot path: check in the event loop, then wait for the batch that carries these rows.

        With a canary, its share of requests goes to it; if it fails on a request the champion answers
        that request (each answer names its version) and the failure counts towards an automatic rollback.
        With a shadow, the champion answers and the shadow's answer is only compared."""
        canary, rollout = self._canary, self.rollout
        if canary is not None and rollout is not None:
            if rollout.mode == "canary" and self._rng.random() * 100 < rollout.weight:
                started = time.perf_counter()
                try:
                    result = await self._apredict_on(canary, payload, params)
                except Exception as err:
                    from civicml.errors import CivicMLError

                    if isinstance(err, CivicMLError):  # the client's input: the champion would refuse it too
                        raise
                    self._canary_error = f"{type(err).__name__}: {err}"[:500]
                    log.debug("canary version %s of %s failed on a request", canary.served.version, self.model_name,
                              exc_info=err)
                    self._canary_result(True, time.perf_counter() - started)
                else:
                    self._canary_result(False, time.perf_counter() - started)
                    return result
            elif rollout.mode == "shadow" and self._rng.random() * 100 < rollout.weight:
                output, served, loaded = await self._apredict_on(self._current or self._loaded(), payload, params)
                asyncio.ensure_future(self._shadow(canary, payload, params, output))
                return output, served, loaded
        loaded = self._current
        if loaded is None:
            from fastapi.concurrency import run_in_threadpool

            loaded = await run_in_threadpool(self._loaded)
        return await self._apredict_on(loaded, payload, params)

    async def _shadow(self, shadow: Loaded, payload, params, answer) -> None:
        started = time.perf_counter()
        try:
            output, _, _ = await self._apredict_on(shadow, payload, params)
        except Exception as err:
            self._canary_error = f"{type(err).__name__}: {err}"[:500]
            log.debug("shadow version %s of %s failed on a request", shadow.served.version, self.model_name,
                      exc_info=err)
            self._canary_result(True, time.perf_counter() - started)
            return
        self._canary_result(False, time.perf_counter() - started)
        same = _labels(output) == _labels(answer)
        self.shadow_counts["total"] += 1
        self.shadow_counts["agree"] += bool(same)
        self._event("shadow", agree=bool(same))

    async def _apredict_on(self, loaded: Loaded, payload: Any, params: dict | None) -> tuple[Any, Served, Loaded]:
        """Check, admit (cost and deadline), then wait for the model off the event loop."""
        limits = self._limits()
        params = checked_params(loaded.runtime, params)
        if _large(payload):  # checking thousands of rows takes milliseconds: not on the event loop
            from fastapi.concurrency import run_in_threadpool

            request = await run_in_threadpool(loaded.validator.prepare, payload, params)
            costs = await run_in_threadpool(admit, request.data, limits.max_cost)
        else:
            request = loaded.validator.prepare(payload, params)
            costs = admit(request.data, limits.max_cost)
        deadline = time.monotonic() + limits.deadline_seconds
        runtime = loaded.runtime
        if isinstance(runtime, BatchingRuntime):
            output = await asyncio.wrap_future(runtime.submit(request.data, request.params, deadline, costs))
        else:
            from fastapi.concurrency import run_in_threadpool

            def call():
                if time.monotonic() > deadline:
                    raise Overloaded("the server is busy: this request's time budget passed before the model "
                                     "could take it (retry later)")
                return runtime.predict(_as_model_input(request.data, runtime), request.params)

            output = await run_in_threadpool(call)
        return output, loaded.served, loaded


def _large(payload: Any) -> bool:
    rows = getattr(payload, "rows", None)
    if rows is None:
        try:
            rows = len(payload)
        except TypeError:
            return False
    return rows > LARGE_ROWS


def checked_params(runtime: Runtime, params: dict | None) -> dict | None:
    """The request's ``params`` if the model declares each of them in its signature's params schema;
    otherwise an :class:`InvalidInput` (HTTP 400) naming the ones it does not declare."""
    if not params:
        return None
    signature = runtime.signature
    schema = getattr(signature, "params", None) if signature is not None else None
    declared = [spec.name for spec in schema.params] if schema is not None else []
    unknown = sorted(str(name) for name in params if name not in declared)
    if unknown:
        said = f"it declares: {', '.join(declared)}" if declared else "it declares none"
        raise InvalidInput(f"unknown params for this model: {', '.join(unknown)} ({said})")
    return params


def _labels(output) -> list:
    import numpy as np

    if isinstance(output, dict) and "label" in output:
        return list(output["label"])
    if hasattr(output, "columns") and "label" in output.columns:
        return list(output["label"])
    return np.asarray(output).tolist()


def _freeze_heap() -> None:
    """Move the loaded model's objects out of the garbage collector's sight: a full collection over a
    large vocabulary otherwise stalls every request for tens of milliseconds (p99 under load)."""
    import gc

    gc.collect()
    gc.freeze()


def _as_model_input(data, runtime: Runtime):
    from serving.batching import merge

    return merge([data], runtime.accepts_columns)


def _call(runtime: Runtime, data, params=None):
    if isinstance(runtime, BatchingRuntime):
        return runtime.predict(data, params)
    return runtime.predict(_as_model_input(data, runtime), params)


def _warm_up(runtime: Runtime, validator: Validator, path, max_batch: int) -> None:
    """Run the model's logged input example once alone and once at batch size, before it serves."""
    try:
        from mlflow.models import Model

        example = Model.load(str(path)).load_input_example(str(path))
    except Exception:  # no example logged: nothing to warm with
        example = None
    if example is None:
        return
    import numpy as np

    runtime.verify(validator.prepare(example).data)  # a faster path is used only if it agrees here
    import pandas as pd

    if isinstance(example, pd.DataFrame):  # what the model cannot answer is refused by the checks, not by it
        learnt = validator.learn_limits(lambda data: _call(runtime, data), example)
        if learnt:
            log.info("%s: inputs limited to what the model answers: %s", path, learnt)
    one = validator.prepare(example.head(1) if hasattr(example, "head") else np.asarray(example)[:1])
    _call(runtime, one.data)
    if max_batch > 1:
        from serving.batching import Columns

        data = one.data
        if isinstance(data, Columns):
            many = Columns.concat([data] * min(max_batch, 32))
        else:
            many = np.concatenate([data] * min(max_batch, 32))
        _call(runtime, many)
