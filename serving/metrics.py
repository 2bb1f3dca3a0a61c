"""Prometheus metrics for one server: requests, latency, batch sizes, model loads, canary split, inputs
outside the training range.

Each app gets its own registry (several servers in one process, as in tests, do not collide).
"""

from __future__ import annotations

from bisect import bisect_left

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import metrics as _prometheus
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 10_000)


class LoopCounter(Counter):
    """A :class:`~prometheus_client.Counter` whose labelled series are counted by one thread, the server's
    event loop (every request is counted there: :meth:`serving.inference.DataPlane.count`), without a lock:
    prometheus_client's ``inc`` takes a lock and checks its arguments, most of a request's metrics work. The
    counts are read when ``/metrics`` is rendered (from any thread: an int is read whole), the same text."""

    def _metric_init(self) -> None:
        super()._metric_init()
        self._counted = 0

    def inc(self, amount: float = 1, exemplar=None) -> None:
        if amount.__class__ is not int or amount < 0 or exemplar is not None or not self._labelvalues:
            super().inc(amount, exemplar)  # its checks and errors, as before
            return
        self._counted += amount

    def _child_samples(self):
        total = Sample("_total", {}, self._value.get() + self._counted, None, self._value.get_exemplar())
        if _prometheus._use_created:
            return total, Sample("_created", {}, self._created, None, None)
        return (total,)


class LoopHistogram(Histogram):
    """A :class:`~prometheus_client.Histogram` observed by one thread, the server's event loop, without a lock
    (:class:`LoopCounter`): a bucket's count and the sum kept in Python, read when ``/metrics`` is rendered."""

    def _metric_init(self) -> None:
        super()._metric_init()
        self._counts = [0] * len(self._upper_bounds)
        self._total = 0.0

    def observe(self, amount: float, exemplar=None) -> None:
        if exemplar is not None or amount != amount or not self._labelvalues:
            super().observe(amount, exemplar)
            return
        self._total += amount
        self._counts[bisect_left(self._upper_bounds, amount)] += 1  # the first bucket whose bound is >= it

    def _child_samples(self):
        samples, acc = [], 0.0
        for i, bound in enumerate(self._upper_bounds):
            acc += self._buckets[i].get() + self._counts[i]
            samples.append(Sample("_bucket", {"le": floatToGoString(bound)}, acc, None,
                                  self._buckets[i].get_exemplar()))
        samples.append(Sample("_count", {}, acc, None, None))
        if self._upper_bounds[0] >= 0:
            samples.append(Sample("_sum", {}, self._sum.get() + self._total, None, None))
        if _prometheus._use_created:
            samples.append(Sample("_created", {}, self._created, None, None))
        return tuple(samples)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = CollectorRegistry()
        self._serving: dict[str, str] = {}
        self._batch_series: dict[str, tuple] = {}  # model -> its batch_rows and batch_seconds series
        r = self.registry
        self.requests = LoopCounter("civicml_requests", "Requests answered (protocol mlflow, v2 or explain)",
                                ["model", "version", "variant", "protocol", "status"], registry=r)
        self.in_flight = Gauge("civicml_requests_in_flight", "Inference requests being answered", registry=r)
        self.in_flight_count = 0  # kept by the data plane on the event loop; read when /metrics is rendered
        self.in_flight.set_function(lambda: self.in_flight_count)
        self.latency = LoopHistogram("civicml_request_seconds", "Inference request latency (server side)",
                                 ["model", "version", "variant", "protocol"], buckets=LATENCY_BUCKETS,
                                 registry=r)
        self.batch_rows = Histogram("civicml_batch_rows", "Rows per model call (adaptive batching)",
                                    ["model"], buckets=BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram("civicml_batch_seconds", "Seconds per model call",
                                       ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.loads = Counter("civicml_model_loads", "Model versions loaded", ["model", "version"], registry=r)
        self.load_failures = Counter("civicml_model_load_failures", "Model versions that failed to load",
                                     ["model", "version"], registry=r)
        self.load_seconds = Histogram("civicml_model_load_seconds", "Seconds to load and warm a version",
                                      ["model"], registry=r)
        self.serving_version = Gauge("civicml_serving_version", "The version an endpoint serves (1 = serving)",
                                     ["model", "version"], registry=r)
        self.canary_weight = Gauge("civicml_canary_weight", "Share of traffic (percent) sent to the canary",
                                   ["model", "version"], registry=r)

        self.rollbacks = Counter("civicml_automatic_rollbacks", "Canaries stopped by their limits",
                                 ["model", "version"], registry=r)
        self.out_of_range = Counter("civicml_out_of_range", "Input values outside the range the model saw in "
                                    "training (answered with a warning) or outside its bounds (refused)",
                                    ["model", "column", "outcome"], registry=r)
        self.shadow = Counter("civicml_shadow_comparisons", "Shadow answers compared with the champion's",
                              ["model", "outcome"], registry=r)

    def on_event(self, kind: str, data: dict) -> None:
        model = data.get("model", "")
        if kind == "batch":  # every batch: the model's two series looked up once (labels() locks and checks)
            series = self._batch_series.get(model)
            if series is None:
                series = self._batch_series[model] = (self.batch_rows.labels(model), self.batch_seconds.labels(model))
            series[0].observe(data["rows"])
            series[1].observe(data["seconds"])
        elif kind == "load":
            self.loads.labels(model, data["version"]).inc()
            self.load_seconds.labels(model).observe(data["seconds"])
            old = self._serving.get(model)
            if old is not None and old != data["version"]:
                self.serving_version.remove(model, old)
            self._serving[model] = data["version"]
            self.serving_version.labels(model, data["version"]).set(1)
        elif kind == "rollout":
            self.canary_weight.clear()
            if data.get("version"):
                self.canary_weight.labels(model, data["version"]).set(data["weight"])
        elif kind == "rollback":
            self.rollbacks.labels(model, data["version"]).inc()
        elif kind == "shadow":
            self.shadow.labels(model, "agree" if data["agree"] else "differ").inc()
        elif kind == "shadow_failed":
            self.shadow.labels(model, "failed").inc()
        elif kind == "load_failed":
            self.load_failures.labels(model, data["version"]).inc()

    def count_out_of_range(self, model: str, warnings: list[dict] = (), refused=None) -> None:
        """Out-of-range values of one request: the warnings of an answer, or the error that refused it."""
        for w in warnings:
            self.out_of_range.labels(model, w["column"], "warned").inc(w["count"])
        column = getattr(refused, "column", None)
        if column is not None:
            self.out_of_range.labels(model, column, "refused").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
