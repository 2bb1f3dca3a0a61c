"""An endpoint: a registered model followed through an alias, served by a named runtime.

Loading happens off the request path: the first load runs before the server reports ready, and
when the alias moves (a promotion or a rollback) the follower thread loads and warms the new
version beside the old one, then swaps one reference; requests keep being answered by the old
version meanwhile and requests in flight finish on the version they started with. A version that
fails to load, to verify or to warm up leaves the old one serving and ``last_error`` says why.
Endpoints are stateless beyond that cache, so more replicas scale out behind any load balancer.

Around the champion, a canary or shadow roll-out read from the registry is served by
:class:`serving.routing.RoutedModel`, which wraps the endpoint's way of answering with one loaded version
as :class:`serving.batching.BatchingRuntime` wraps a runtime; every runtime is called the same way
(:meth:`serving.runtime.Runtime.asubmit`, :meth:`~serving.runtime.Runtime.predict_request`).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from civicml.errors import InvalidInput
from civicml.settings import ServingLimits, Settings
from civicml.tags import TAG_RUNTIME, TAG_VARIANT, TAG_VARIANT_OF
from registry import find_variant, resolve, version_of
from serving.batching import BatchingRuntime, admit, batch_slice_cost
from serving.cpu import compute_path, quiet_math_threads
from serving.dataplane import InferenceRequest, Table, Validator
from serving.routing import RolloutHooks, RolloutTally, RoutedModel
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
    compute: dict | None = None  # the compute path the model took on this CPU (serving.cpu.compute_path)


@dataclass(frozen=True)
class EndpointOptions:
    """How an endpoint serves its alias: which variant and runtime, how often it looks for a move, how it batches.

    ``runtime=None`` is "not chosen": a variant's own registered runtime (``civicml.runtime`` tag), else
    ``pyfunc``; a name (``"pyfunc"`` included) is the caller's choice and wins over the variant's."""

    variant: str | None = None
    runtime: str | None = None
    refresh_seconds: float = 10.0  # between registry reads by :meth:`Endpoint.follow` (0: never)
    batching: bool = True  # concurrent requests merged into one model call (serving.batching)
    max_batch: int = 64
    max_wait_ms: float = 1.0
    inline_ms: float = 10.0  # a model whose full batch takes at most this is answered on the event loop (batching)


class Endpoint:
    """A registered model followed through ``alias``, with any canary or shadow roll-out beside it.

    ``options`` (:class:`EndpointOptions`), or any of its fields by name (``refresh_seconds=0``, ``variant=``,
    ``batching=False``, ...) over them. ``on_event``: metrics hooks, ``(kind, data)``. ``key``: the name clients
    use on a server with several endpoints (default ``NAME`` or ``NAME@ALIAS``)."""

    def __init__(self, model_name: str, alias: str = "champion", settings: Settings | None = None,
                 options: EndpointOptions | None = None, *, on_event: Callable[[str, dict], None] | None = None,
                 key: str | None = None, **option_fields):
        self.options = dataclasses.replace(options or EndpointOptions(), **option_fields)
        self._key = key
        # admission control (cost per request, deadline, slices): set by create_app; None: from the environment
        self.limits: ServingLimits | None = None
        self.model_name = model_name
        self.alias = alias
        self.settings = settings or Settings.from_env()
        self.on_event = on_event  # metrics hooks: ("load", {...}), ("load_failed", {...}), ("batch", {...})
        self.in_flight: Callable[[], int] | None = None  # set by create_app: requests its server answers now
        self._current: Loaded | None = None
        self._swap = threading.Lock()
        self._stop = threading.Event()
        self._follower: threading.Thread | None = None
        self.last_error: str | None = None
        self._router: RoutedModel | None = None  # a canary or shadow version beside the champion
        self._tally = RolloutTally()

    @property
    def key(self) -> str:
        """The name clients use for this endpoint on a server with several (V2 model name)."""
        if self._key:
            return self._key
        return self.model_name if self.alias == "champion" else f"{self.model_name}@{self.alias}"

    @property
    def variant(self) -> str | None:
        return self.options.variant

    @property
    def refresh_seconds(self) -> float:
        return self.options.refresh_seconds

    # -- the roll-out beside the champion (serving.routing) ----------------------------------------
    @property
    def rollout(self):
        """The registry's roll-out this endpoint serves (``registry.rollout.Rollout``), or None."""
        router = self._router
        return router.rollout if router is not None and router.active else None

    @property
    def shadow_counts(self) -> dict:
        """Shadow answers compared with the champion's: ``{"agree": n, "total": n}``."""
        return self._tally.shadow

    @property
    def shadow_failures(self) -> int:
        return self._tally.shadow_failures

    @property
    def rolled_back(self) -> str | None:
        """Why the last roll-out was stopped automatically, or None."""
        return self._tally.rolled_back

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
        the parent instead."""
        return self._choice(version_of(self.model_name, self.alias, settings=self.settings).version)

    def _choice(self, version: str) -> tuple[str, str | None, str]:
        """(version to load, variant kind, runtime name) for parent ``version``: itself, or its variant. A runtime
        not chosen (None) is the variant's registered one, else pyfunc."""
        chosen = self.options.runtime
        if not self.variant:
            return version, None, chosen or "pyfunc"
        found = find_variant(self.model_name, version, self.variant, settings=self.settings)
        return found.version, self.variant, chosen or (found.tags or {}).get(TAG_RUNTIME) or "pyfunc"

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
            _freeze_heap()  # a new version only: a refresh that finds the same one returned above
            self._event("load", version=version, seconds=seconds)
            if current:  # requests in flight still hold the old runtime; stop its batch worker afterwards
                log.info("alias %s of %s moved: version %s -> %s (loaded in %.2f s)", self.alias, self.model_name,
                         current.served.version, version, seconds)
                threading.Timer(30.0, current.runtime.unload).start()
            return loaded.served

    def _load(self, version: str, variant: str | None, runtime_name: str) -> Loaded:
        local = resolve(self.model_name, version, settings=self.settings)  # verifies the checksum
        quiet_math_threads()
        runtime = get_runtime(runtime_name, local)
        runtime.load()
        options = self.options
        validator = Validator(runtime.signature, runtime.metadata)
        if options.batching:
            runtime = BatchingRuntime(runtime, options.max_batch, options.max_wait_ms, on_batch=self._on_batch,
                                      slice_cost=batch_slice_cost(validator.tensor_spec.shape if validator.tensor
                                                                  else None, options.max_batch,
                                                                  self._limits().slice_cost),
                                      in_flight=self._in_flight, inline_ms=options.inline_ms)
        _warm_up(runtime, validator, local.path, options.max_batch)
        tags = local.version.tags or {}  # a variant says what it is, however it was reached
        kind = tags.get(TAG_VARIANT) or variant
        served = Served(self.model_name, local.version.version, self.alias, runtime.name, kind,
                        tags.get(TAG_VARIANT_OF) if kind else None)
        return Loaded(served, runtime, validator, time.time(), compute_path(runtime))

    def _limits(self) -> ServingLimits:
        if self.limits is None:
            self.limits = ServingLimits.from_env()
        return self.limits

    def _in_flight(self) -> int | None:
        return self.in_flight() if self.in_flight is not None else None

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
        from registry import current_rollout

        wanted = current_rollout(self.model_name, self.settings) if self.alias == "champion" else None
        served = self.served
        champion = (served.variant_of or served.version) if served else None  # a roll-out names parent versions
        if wanted is None or wanted.version == champion:
            self._router = None
            self._event("rollout", version=None, weight=0)
            return
        version, variant, runtime_name = self._choice(wanted.version)  # its variant too: raises if it has none
        router = self._router
        if router is None or not router.active or router.version != version:
            loaded = self._load(version, variant, runtime_name)  # raises: keep serving without it
            candidate = dataclasses.replace(loaded, served=dataclasses.replace(loaded.served, alias=wanted.mode))
            router = RoutedModel(self._answer, candidate, wanted, self._tally, self._hooks())
        else:
            router.update(wanted)
        self._router = router
        self._event("rollout", version=wanted.version, weight=wanted.weight)

    def _hooks(self) -> RolloutHooks:
        from registry import stop_rollout

        def record_stop(reason: str) -> None:
            stop_rollout(self.model_name, reason, automatic=True, settings=self.settings)

        return RolloutHooks(event=self._event, record_stop=record_stop,
                            agree=lambda output, answer: _labels(output) == _labels(answer))

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

    @property
    def compute(self) -> dict | None:
        """The compute path the served version took on this CPU at load (``/health``)."""
        return self._current.compute if self._current else None

    def signature(self):
        return self._current.runtime.signature if self._current else None

    def _loaded(self) -> Loaded:
        if self._current is None:
            self.load()
        return self._current

    def predict(self, payload: Any, params: dict | None = None) -> tuple[Any, Served]:
        loaded = self._loaded()  # one consistent version, even if a swap happens meanwhile
        request: InferenceRequest = loaded.validator.prepare(payload, checked_params(loaded.runtime, params))
        return loaded.runtime.predict_request(request.data, request.params), loaded.served

    async def apredict(self, payload: Any, params: dict | None = None) -> tuple[Any, Served, Loaded]:
        """The HTTP hot path: check in the event loop, then wait for the batch that carries these rows.

        With a canary, its share of requests goes to it; if it fails on a request the champion answers
        that request (each answer names its version) and the failure counts towards an automatic rollback.
        With a shadow, the champion answers and the shadow's answer is only compared (:mod:`serving.routing`)."""
        sent = self.submit(payload, params)
        if sent is not None:
            return await sent[0], sent[1].served, sent[1]
        loaded = self._current
        if loaded is None:
            from starlette.concurrency import run_in_threadpool

            loaded = await run_in_threadpool(self._loaded)
        router = self._router
        if router is not None and router.active:
            return await router(loaded, payload, params)
        return await self._answer(loaded, payload, params)

    def submit(self, payload: Any, params: dict | None = None) -> tuple[Any, Loaded] | None:
        """:meth:`apredict`'s usual way, without a coroutine: a small request to the loaded version alone (no
        roll-out beside it), whose runtime takes callers on the event loop (``submit_soon``, the batcher's),
        checked and admitted here: (an awaitable of its output, the version answering it). None for anything
        else (then :meth:`apredict`). Refusals (checks, cost) are raised as apredict raises them."""
        loaded = self._current
        router = self._router
        if loaded is None or (router is not None and router.active) or _large(payload):
            return None
        submit_soon = getattr(loaded.runtime, "submit_soon", None)
        if submit_soon is None:
            return None
        limits = self._limits()
        request = loaded.validator.prepare(payload, checked_params(loaded.runtime, params))
        costs = admit(request.data, limits.max_cost)
        return submit_soon(request.data, request.params, time.monotonic() + limits.deadline_seconds, costs), loaded

    async def _answer(self, loaded: Loaded, payload: Any, params: dict | None) -> tuple[Any, Served, Loaded]:
        """Check, admit (cost and deadline), then wait for the model off the event loop."""
        limits = self._limits()
        params = checked_params(loaded.runtime, params)
        if _large(payload):  # checking thousands of rows takes milliseconds: not on the event loop
            from starlette.concurrency import run_in_threadpool

            request = await run_in_threadpool(loaded.validator.prepare, payload, params)
            costs = await run_in_threadpool(admit, request.data, limits.max_cost)
        else:
            request = loaded.validator.prepare(payload, params)
            costs = admit(request.data, limits.max_cost)
        deadline = time.monotonic() + limits.deadline_seconds
        output = await loaded.runtime.asubmit(request.data, request.params, deadline, costs)
        return output, loaded.served, loaded


def _large(payload: Any) -> bool:
    if payload.__class__ is Table:
        return payload.rows > LARGE_ROWS
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

    from civicml.answers import read_labels

    labels = read_labels(output)
    return labels.tolist() if labels is not None else np.asarray(output).tolist()


def _freeze_heap() -> None:
    """Move the loaded model's objects out of the garbage collector's sight: a full collection over a
    large vocabulary otherwise stalls every request for tens of milliseconds (p99 under load).

    Called once for each new version an endpoint loads (never on a refresh that finds the same one). The
    heap is unfrozen first: a version replaced earlier is then collected once its last request is done,
    instead of staying frozen for the life of the process."""
    import gc

    gc.unfreeze()
    gc.collect()
    gc.freeze()


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
        learnt = validator.learn_limits(lambda data: runtime.predict_request(data), example)
        if learnt:
            log.info("%s: inputs limited to what the model answers: %s", path, learnt)
    one = validator.prepare(example.head(1) if hasattr(example, "head") else np.asarray(example)[:1])
    runtime.predict_request(one.data)
    if max_batch > 1:
        from serving.batching import Columns

        data = one.data
        if isinstance(data, Columns):
            many = Columns.concat([data] * min(max_batch, 32))
        else:
            many = np.concatenate([data] * min(max_batch, 32))
        runtime.predict_request(many)
