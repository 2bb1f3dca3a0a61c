"""Canary and shadow roll-outs: a second version wrapped around how the champion answers.

A roll-out (``registry.rollout``: a version, a weight in percent, canary or shadow, and limits) is served by a
:class:`RoutedModel` that the endpoint builds beside its champion, as :class:`serving.batching.BatchingRuntime`
wraps a runtime: it takes the endpoint's own way of answering with one loaded version (check, admit, run) and
answers the same call with the same result shape, ``(output, served, loaded)``.

The split is not a coin thrown per request but a golden-ratio sequence (:class:`Split`): after any ``n``
requests a replica has sent ``weight`` percent of them to the candidate to within a few requests (a coin is
off by ``sqrt(n)``), and so has every subsequence (every other request, the requests a round-robin load
balancer hands one replica), so N replicas behind any balancer together send the registry's weight.

* canary: ``weight`` percent of requests are answered by the candidate; a request it fails on (anything but
  the client's own input, which the champion would refuse too) is answered by the champion instead, so no
  request fails because of the canary; each answer names the version that gave it.
* shadow: the champion answers every request; ``weight`` percent are also sent to the candidate in the
  background and the labels compared (agreement counted). A request the shadow fails on is logged, counted
  (:attr:`RolloutTally.shadow_failures`, the ``shadow_failed`` event) and counts towards the limits.

:class:`RollbackWindow` holds the candidate's last ``window`` requests (failed or not, seconds). Once it is
full and the error rate or the p95 latency passes the roll-out's limits, this replica stops the roll-out at
once and records the stop in the registry from a background thread; the other replicas read it there at
their next refresh.

Concurrency: requests, and the shadow's background tasks, run on the server's event loop, so the window and
the tally are only changed from there; the endpoint's refresh thread replaces the whole router (one
reference) or hands it a new roll-out for the same version (:meth:`RoutedModel.update`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from civicml.errors import CivicMLError

if TYPE_CHECKING:
    from registry import Rollout
    from serving.endpoint import Loaded, Served

log = logging.getLogger("civicml.serving")

# (loaded version, payload, params) -> (output, what answered, the loaded version that answered)
AnswerFn = Callable[["Loaded", Any, "dict | None"], Awaitable[tuple[Any, "Served", "Loaded"]]]


@dataclass
class RolloutTally:
    """What an endpoint's roll-outs did, kept across them (``/health``): shadow agreement and failures, and
    why the last roll-out was stopped automatically."""

    shadow: dict = field(default_factory=lambda: {"agree": 0, "total": 0})
    shadow_failures: int = 0
    rolled_back: str | None = None


@dataclass(frozen=True)
class RolloutHooks:
    """What a router tells the endpoint around it: metrics events, the registry's record of an automatic stop,
    and whether two answers agree (the shadow comparison)."""

    event: Callable[..., None]
    record_stop: Callable[[str], None]
    agree: Callable[[Any, Any], bool]


class RollbackWindow:
    """The candidate's last ``size`` requests: whether each failed, and its seconds."""

    def __init__(self, size: int):
        self.results: collections.deque = collections.deque(maxlen=size)
        self.last_error: str | None = None  # the candidate's latest exception, for the rollback's audit record

    def add(self, failed: bool, seconds: float, rollout: "Rollout") -> str | None:
        """Record one request; once the window is full, why ``rollout``'s limits are passed (or None)."""
        window = self.results
        window.append((failed, seconds))
        if len(window) < window.maxlen:
            return None
        errors = sum(f for f, _ in window) / len(window)
        p95 = sorted(t for _, t in window)[int(0.95 * (len(window) - 1))] * 1000
        if errors > rollout.max_error_rate:
            return f"error rate {errors:.0%} over the last {len(window)} requests (limit {rollout.max_error_rate:.0%})"
        if rollout.max_p95_ms is not None and p95 > rollout.max_p95_ms:
            return f"p95 {p95:.0f} ms over the last {len(window)} requests (limit {rollout.max_p95_ms:.0f} ms)"
        return None


GOLDEN = (5 ** 0.5 - 1) / 2  # the rotation whose multiples mod 1 fill [0, 1) most evenly


class Split:
    """Which requests go to the candidate: the ``i``-th does when ``(start + i * GOLDEN) mod 1`` falls below
    ``weight / 100``. Any ``n`` consecutive requests (or any arithmetic subsequence of them) are split by the
    weight to within O(log n) requests; ``start`` is random so that replicas do not move in step."""

    def __init__(self, start: float | None = None):
        self.point = random.random() if start is None else start % 1.0

    def take(self, weight: float) -> bool:
        """Whether the next request goes to the candidate, at ``weight`` percent."""
        self.point = (self.point + GOLDEN) % 1.0
        return self.point * 100 < weight


class RoutedModel:
    """The champion's answers with a canary or shadow ``candidate`` beside them, split by ``rollout.weight``.

    ``answer`` is how the endpoint answers with one loaded version; calling the router answers the same way
    with the champion it is given, or with the candidate for the canary's share of requests."""

    def __init__(self, answer: AnswerFn, candidate: "Loaded", rollout: "Rollout", tally: RolloutTally,
                 hooks: RolloutHooks):
        self.answer = answer
        self.candidate = candidate
        self.rollout = rollout
        self.tally = tally
        self.hooks = hooks
        self.window = RollbackWindow(rollout.window)
        self.active = True  # False once its limits stopped it: the champion alone answers
        self._split = Split()  # its position is kept when the weight changes (update)
        self._background: set[asyncio.Task] = set()  # shadow calls in flight (held: the loop keeps weak refs)

    @property
    def version(self) -> str:
        """The candidate's version (a variant's own version when the endpoint serves a variant)."""
        return self.candidate.served.version

    def update(self, rollout: "Rollout") -> None:
        """The same version with a new weight or new limits: its window of recent requests is kept."""
        self.rollout = rollout

    async def __call__(self, champion: "Loaded", payload: Any, params: dict | None):
        rollout = self.rollout
        if not self.active or not self._split.take(rollout.weight):
            return await self.answer(champion, payload, params)
        if rollout.mode == "canary":
            return await self._canary(champion, payload, params)
        result = await self.answer(champion, payload, params)
        task = asyncio.ensure_future(self._shadow(payload, params, result[0]))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return result

    async def _canary(self, champion: "Loaded", payload: Any, params: dict | None):
        started = time.perf_counter()
        try:
            result = await self.answer(self.candidate, payload, params)
        except CivicMLError:  # the client's input (or a busy server): the champion would refuse it too
            raise
        except Exception as err:
            log.debug("canary version %s of %s failed on a request", self.version, self.candidate.served.name,
                      exc_info=err)
            self._failed(err, started)
            return await self.answer(champion, payload, params)
        self._judge(False, started)
        return result

    async def _shadow(self, payload: Any, params: dict | None, answer: Any) -> None:
        started = time.perf_counter()
        try:
            output, _, _ = await self.answer(self.candidate, payload, params)
        except Exception as err:
            self.tally.shadow_failures += 1
            log.warning("shadow version %s of %s failed on a request: %s: %s", self.version,
                        self.candidate.served.name, type(err).__name__, err)
            self.hooks.event("shadow_failed", version=self.version, error=f"{type(err).__name__}: {err}"[:500])
            self._failed(err, started)
            return
        self._judge(False, started)
        same = bool(self.hooks.agree(output, answer))
        self.tally.shadow["total"] += 1
        self.tally.shadow["agree"] += same
        self.hooks.event("shadow", agree=same)

    def _failed(self, err: BaseException, started: float) -> None:
        self.window.last_error = f"{type(err).__name__}: {err}"[:500]
        self._judge(True, started)

    def _judge(self, failed: bool, started: float) -> None:
        if not self.active:  # stopped already: requests still in flight do not count
            return
        why = self.window.add(failed, time.perf_counter() - started, self.rollout)
        if why is not None:
            self._stop(why)

    def _stop(self, why: str) -> None:
        """This replica stops at once; the registry tells the others."""
        self.active = False
        last = self.window.last_error
        self.tally.rolled_back = f"version {self.version}: {why}" + (f"; last failure: {last}" if last else "")
        log.warning("automatic rollback of the %s of %s: %s", self.rollout.mode, self.candidate.served.name,
                    self.tally.rolled_back)
        self.hooks.event("rollback", version=self.version, reason=why)
        reason = f"automatic: {self.tally.rolled_back}"

        def record():
            try:
                self.hooks.record_stop(reason)
            except Exception as err:
                log.error("could not record the automatic rollback: %s", err)

        threading.Thread(target=record, name="rollback", daemon=True).start()


__all__ = ["RollbackWindow", "RolloutHooks", "RolloutTally", "RoutedModel", "Split"]
