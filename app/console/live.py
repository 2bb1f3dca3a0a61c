"""What the console shows beside the registry: live endpoint figures and variant comparisons.

Live figures come from a running CivicML endpoint's Prometheus ``/metrics`` page
(:mod:`serving.metrics`): requests and errors by model, version and variant, the latency
histogram (p50/p95 estimated from its buckets, as Prometheus' ``histogram_quantile`` does),
the version each endpoint serves and any canary's share. Endpoints are named with
``civicml console --endpoint URL`` (repeatable) or ``CIVICML_CONSOLE_ENDPOINTS`` (comma-separated).

Variant comparisons come from :func:`registry.variants.variants_of` (kind, gate verdict) and
:func:`registry.show` (the figures each variant's run measured beside its parent).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from civicml.errors import CivicMLError, InvalidInput
from civicml.settings import console_endpoints
from civicml.tags import TAG_VARIANT, TAG_VARIANT_GATE, TAG_VARIANT_VERDICTS

MAX_BYTES = 4_000_000


def endpoints_from(values: list[str] | None, env: dict[str, str] | None = None) -> list[str]:
    """Endpoint base URLs from the command line, else the environment; each checked to be http(s)."""
    raw = list(values or []) or console_endpoints(env)
    out = []
    for url in (u.strip().rstrip("/") for u in raw):
        if not url:
            continue
        if not url.startswith(("http://", "https://")) or len(url) > 300:
            raise InvalidInput(f"endpoint '{url[:80]}' must be an http:// or https:// URL")
        if url not in out:
            out.append(url)
    return out


@dataclass
class Series:
    """One (model, version, variant) as an endpoint counts it."""

    model: str
    version: str
    variant: str
    requests: float = 0.0
    client_errors: float = 0.0  # 4xx: the caller's input was refused
    server_errors: float = 0.0  # 5xx: the endpoint failed
    latency_count: float = 0.0
    latency_sum: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # upper bound -> cumulative count

    @property
    def error_rate(self) -> float | None:
        return self.server_errors / self.requests if self.requests else None

    @property
    def mean_ms(self) -> float | None:
        return 1000 * self.latency_sum / self.latency_count if self.latency_count else None

    def quantile_ms(self, q: float) -> float | None:
        """``histogram_quantile``: linear inside the bucket that holds the q-th observation."""
        if not self.latency_count or not self.buckets:
            return None
        rank, lower, below = q * self.latency_count, 0.0, 0.0
        for bound in sorted(self.buckets):
            count = self.buckets[bound]
            if count >= rank:
                if math.isinf(bound):
                    return 1000 * lower  # beyond the last finite bucket: its bound, as Prometheus says
                inside = count - below
                return 1000 * (lower + (bound - lower) * ((rank - below) / inside if inside else 0.0))
            lower, below = bound, count
        return None

    def to_dict(self) -> dict:
        return {"model": self.model, "version": self.version, "variant": self.variant, "requests": self.requests,
                "client_errors": self.client_errors, "server_errors": self.server_errors,
                "error_rate": self.error_rate, "mean_ms": self.mean_ms, "p50_ms": self.quantile_ms(0.5),
                "p95_ms": self.quantile_ms(0.95)}


@dataclass
class EndpointFigures:
    url: str
    series: list[Series] = field(default_factory=list)
    serving: dict[str, str] = field(default_factory=dict)  # model -> version loaded
    canary: dict[str, tuple[str, float]] = field(default_factory=dict)  # model -> (version, percent)
    in_flight: float = 0.0
    problem: str | None = None  # why nothing could be read

    def for_model(self, name: str) -> list[Series]:
        return [s for s in self.series if s.model == name]


def parse(text: str, url: str = "") -> EndpointFigures:
    """The figures of one ``/metrics`` page (Prometheus text format)."""
    from prometheus_client.parser import text_string_to_metric_families

    out = EndpointFigures(url)
    by_key: dict[tuple[str, str, str], Series] = {}
    latency_by_model: dict[str, Series] = {}  # endpoints whose latency histogram has no version label

    def series(labels: dict) -> Series:
        key = (labels.get("model", ""), labels.get("version", "-"), labels.get("variant", "-"))
        if key not in by_key:
            by_key[key] = Series(*key)
        return by_key[key]

    try:
        families = list(text_string_to_metric_families(text))
    except Exception as err:  # noqa: BLE001 - not a metrics page: say so
        raise InvalidInput(f"{url}/metrics is not a Prometheus metrics page ({type(err).__name__})") from None
    for family in families:
        for sample in family.samples:
            name, labels, value = sample.name, dict(sample.labels), float(sample.value)
            if name == "civicml_requests_total":
                s = series(labels)
                s.requests += value
                status = labels.get("status", "200")
                if status.startswith("4"):
                    s.client_errors += value
                elif status.startswith("5"):
                    s.server_errors += value
            elif name.startswith("civicml_request_seconds_"):
                target = series(labels) if "version" in labels else latency_by_model.setdefault(
                    labels.get("model", ""), Series(labels.get("model", ""), "*", "*"))
                if name.endswith("_bucket"):
                    bound = float(labels["le"])
                    target.buckets[bound] = target.buckets.get(bound, 0.0) + value
                elif name.endswith("_count"):
                    target.latency_count += value
                elif name.endswith("_sum"):
                    target.latency_sum += value
            elif name == "civicml_serving_version" and value:
                out.serving[labels.get("model", "")] = labels.get("version", "")
            elif name == "civicml_canary_weight" and value:
                out.canary[labels.get("model", "")] = (labels.get("version", ""), value)
            elif name == "civicml_requests_in_flight":
                out.in_flight = value
    out.series = sorted(by_key.values(), key=lambda s: (s.model, _number(s.version), s.variant))
    for model, s in latency_by_model.items():  # an older endpoint: latency for the model as a whole
        out.series.append(s)
    return out


def _number(text: str) -> float:
    return float(text) if text.isdigit() else math.inf


def read_endpoint(url: str, timeout: float = 3.0) -> EndpointFigures:
    """Fetch and parse ``url/metrics``; an unreachable endpoint gives figures with ``problem`` set."""
    import httpx

    try:
        response = httpx.get(f"{url}/metrics", timeout=timeout, follow_redirects=False)
    except httpx.HTTPError as err:
        return EndpointFigures(url, problem=f"cannot reach {url}: {type(err).__name__}")
    if response.status_code != 200:
        return EndpointFigures(url, problem=f"{url}/metrics answered HTTP {response.status_code}")
    try:
        return parse(response.content[:MAX_BYTES].decode("utf-8", errors="replace"), url)
    except CivicMLError as err:
        return EndpointFigures(url, problem=str(err))


# -- variants ---------------------------------------------------------------------------------------
_NOT_QUALITY = ("size_bytes", "quality_loss", "size_reduction", "agreement", "holdout_rows", "cosine", "gate_passed")


@dataclass
class VariantRow:
    version: str
    kind: str
    gate: str
    size_bytes: float | None
    size_reduction: float | None
    latency: dict[str, tuple[float | None, float | None]]  # "b1 p50" -> (parent ms, variant ms)
    metric: str | None
    quality: tuple[float | None, float | None]  # (parent, variant)
    agreement: float | None
    verdicts: list[dict]


def variant_rows(name: str, parent: str, settings, shown: dict[str, dict] | None = None) -> list[VariantRow]:
    """Each registered variant of ``parent`` beside it: kind, size, latency, quality, agreement, gate verdict."""
    import json

    from registry import show, variants_of

    found = variants_of(name, parent, settings=settings)
    if not found:
        return []
    shown = shown if shown is not None else {v["version"]: v for v in show(name, settings=settings)}
    rows = []
    for v in found:
        m = (shown.get(v.version) or {}).get("metrics") or {}
        quality = next((k for k in sorted(m) if f"parent_{k}" in m and not k.startswith(("latency_", "size_"))
                        and k not in _NOT_QUALITY), None)
        latency = {f"b{b} {p}": (m.get(f"parent_latency_b{b}_{p}_ms"), m.get(f"latency_b{b}_{p}_ms"))
                   for b in (1, 64) for p in ("p50", "p95")}
        try:
            verdicts = json.loads(v.tags.get(TAG_VARIANT_VERDICTS, "[]"))
        except json.JSONDecodeError:
            verdicts = []
        rows.append(VariantRow(v.version, v.tags.get(TAG_VARIANT, "?"), v.tags.get(TAG_VARIANT_GATE, "?"),
                               m.get("size_bytes"), m.get("size_reduction"), latency, quality,
                               (m.get(f"parent_{quality}"), m.get(quality)) if quality else (None, None),
                               m.get("agreement"), verdicts if isinstance(verdicts, list) else []))
    return rows


__all__ = ["EndpointFigures", "Series", "VariantRow", "endpoints_from", "parse", "read_endpoint",
           "variant_rows"]
