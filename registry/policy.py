"""A promotion policy: the gates a version must pass before it serves.

One YAML file per registered model, kept in the project and versioned with its
code; every promotion records the file's SHA-256 and ``version``. Fields::

    version: 3                      # the policy's own revision number (recorded)
    model: service-requests-router  # the registered model it governs (checked)
    metric: macro_f1                # primary metric, re-evaluated on the held-out set
    min_value: 0.80                 # absolute threshold for ``metric`` (null: none)
    beat_baseline: {margin: 0.02}   # beat the trivial baseline (majority class, mean or median) by this much
    max_regression: 0.0             # how much worse than the champion ``metric`` may be
    thresholds: {accuracy: 0.85}    # more absolute thresholds
    max_regressions: {accuracy: 0.01}  # more bounds relative to the champion
    holdout:                        # the named held-out data set evaluated at promotion
      name: service_requests-holdout
      seed: 10000
      rows: 1000
      fingerprint: null             # pin the exact data (refuse any other)
    signature: compatible           # always checked: a candidate that breaks the serving alias's input
                                    # contract is refused whatever this says, unless forced (`promote --force`)
    latency_p95_ms: 250             # single-row predictions measured at promotion
    latency_rows: 50
    latency_repeats: 3              # each row timed this many times; its latency is the fastest (the model's
                                    # own cost, not the host's other load)
    approvals: 2                    # distinct release managers (`civicml approve`)
    report_by: [district]           # held-out figures per value of these columns (model card)
    unseen_phrasings:               # a second held-out set, worded as no training set is, with its own floor
      seed: 20000
      rows: 400
      metric: accuracy
      min_value: 0.65
    variants:                       # bounds for compressed variants, and which ones promotion builds
      max_quality_loss: 0.02        # (registry.variant_policy.VariantPolicy; docs/variants.md)
      build: [onnx]
    accountability:                 # a high-risk model waits for people (docs/accountability.md): promotion is
      high_risk: true               # refused while these fields of the use case's transparency.yaml are
      required: [lawful_basis, responsible_owner, dpia, objection_procedure]  # empty, or reviewed before the
      max_age_days: 365             # candidate's registration or the policy's recording, or longer ago than this
    equity:                         # the metric per group of a held-out column, judged with bootstrap intervals
      by: district                  # (registry.equity): each group >= min_ratio of the best group, none worse
      min_ratio: 0.8                # than under the champion by more than max_group_regression; groups under
      max_group_regression: 0.05    # min_count rows are reported, never judged
      min_count: 30
    recent_window:                  # judged on today's traffic too: the most recent labelled window of served
      window: 7d                    # answers (civicml promote reads it from the monitoring store), not worse
      min_count: 30                 # than the champion on the same rows; fewer labelled rows: refused, saying so
      max_regression: 0.0
      metric: macro_f1              # default: the policy's metric
      min_value: null               # an optional floor on that window too
    monitoring:                     # what is watched once it serves, and who is told
      min_quality: 0.80             # (registry.monitoring_policy.MonitoringPolicy; docs/monitoring.md)
      webhook: https://alerts.example.org/civicml
      record: sample=0.1

``PromotionPolicy()`` is the minimal policy (threshold and no regression on one
metric, and the input contract); every other gate is switched on by its field. A
field CivicML does not know is an error that names it, and so is a gate that can
never fail (a floor at or below the lowest value its metric takes, an infinite
ceiling, any non-finite bound): "gate ... gates nothing". Every field, with its
type, default and an example: docs/policy.md.

Which policy governs a registered model is the registry's business, not the
caller's: see :mod:`registry.inputs` (recorded with the model at registration).
"""

from __future__ import annotations

import difflib
import hashlib
import math
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from civicml.errors import InvalidInput
from registry.gates import (METRICS, ApprovalCount, BeatBaseline, Gate, HoldoutIdentity, HumanAccountability,
                            LatencyBudget, MetricThreshold, NoRegression, SignatureCompatible, UnseenPhrasings,
                            lower_is_better)
from registry.transparency_file import HUMAN_FIELDS
from registry.gates import EquityRatio, EquityRegression, RecentWindow
from registry.monitoring_policy import MonitoringPolicy, parse_window
from registry.variant_policy import VariantPolicy

SIGNATURE_MODES = ("compatible", "any")


@dataclass(frozen=True)
class HoldoutSpec:
    """The named held-out data set a promotion re-evaluates on."""

    name: str | None = None
    seed: int = 10_000
    rows: int | None = None
    fingerprint: str | None = None

    @property
    def label(self) -> str:
        return self.name or f"holdout-seed{self.seed}" + (f"-n{self.rows}" if self.rows else "")


@dataclass(frozen=True)
class BaselineSpec:
    """``beat_baseline``: the candidate beats the trivial baseline by ``margin`` (in the metric's units, or a
    fraction of the baseline's figure when ``relative``)."""

    margin: float = 0.02
    relative: bool = False


@dataclass(frozen=True)
class UnseenSpec:
    """``unseen_phrasings``: a second held-out set whose wording no training set holds, with its own floor."""

    name: str | None = None
    seed: int = 20_000
    rows: int = 400
    metric: str = "accuracy"
    min_value: float = 0.0

    @property
    def label(self) -> str:
        return self.name or f"unseen-phrasings-seed{self.seed}-n{self.rows}"


DEFAULT_REQUIRED = ("lawful_basis", "responsible_owner", "dpia", "objection_procedure")


@dataclass(frozen=True)
class AccountabilitySpec:
    """``accountability``: a high-risk model is promoted only when people have written ``required`` fields of the
    use case's transparency.yaml and reviewed them since the last material change (and within
    ``max_age_days``): :class:`registry.gates.HumanAccountability`."""

    high_risk: bool = False
    required: tuple[str, ...] = DEFAULT_REQUIRED
    max_age_days: int | None = None


@dataclass(frozen=True)
class EquitySpec:
    """``equity``: the policy's metric (or ``metric``) per value of the held-out column ``by``; each judged group
    at least ``min_ratio`` of the best group, and none worse than under the champion by more than
    ``max_group_regression`` (either may be null, not both), both judged with ``confidence`` intervals of
    ``resamples`` seeded bootstrap draws; groups under ``min_count`` rows are reported, never judged
    (:mod:`registry.equity`)."""

    by: str = "district"
    metric: str | None = None
    min_ratio: float | None = 0.8
    max_group_regression: float | None = None
    min_count: int = 30
    resamples: int = 200
    confidence: float = 0.95
    seed: int = 0

    def __post_init__(self):
        def bad(name: str, why: str):
            raise InvalidInput(f"policy: field 'equity.{name}' {why}")

        if not isinstance(self.by, str) or not self.by:
            bad("by", f"must name a column of the held-out set, got {self.by!r}")
        if self.metric is not None:
            _check_metric("equity.metric", self.metric)
        if self.min_ratio is not None and math.isfinite(self.min_ratio) and self.min_ratio > 1:
            bad("min_ratio", f"must be at most 1 (the best group's own ratio), got {self.min_ratio}")
        if self.max_group_regression is not None and self.max_group_regression < 0:
            bad("max_group_regression", f"must be >= 0, got {self.max_group_regression}")
        if self.min_count < 1:
            bad("min_count", f"must be >= 1, got {self.min_count}")
        if self.resamples < 20:
            bad("resamples", f"must be >= 20 (an interval needs draws), got {self.resamples}")
        if not 0 < self.confidence < 1:
            bad("confidence", f"must lie between 0 and 1, got {self.confidence}")

    def never_failing(self, metric: str) -> list[str]:
        """Why this section can never refuse a promotion ([] if it can); ``metric``: the one it judges."""
        from projects.metrics import bounds

        ratio, margin = self.min_ratio, self.max_group_regression
        if ratio is None and margin is None:
            return ["gate 'equity' gates nothing: set 'equity.min_ratio', 'equity.max_group_regression' or both"]
        found = []
        if ratio is not None and not math.isfinite(ratio):
            found.append(f"gate 'equity' gates nothing: field 'equity.min_ratio' is {ratio}, not a finite bound")
        elif ratio is not None and ratio <= 0:
            found.append("gate 'equity' gates nothing: an impact ratio is never below 0 (field "
                         "'equity.min_ratio': a floor must lie above 0)")
        elif ratio is not None and bounds(metric)[0] < 0:
            found.append(f"gate 'equity' cannot judge field 'equity.min_ratio': {metric} can be negative, so a "
                         f"ratio of two groups' {metric} means nothing (set 'equity.metric')")
        if margin is not None and not math.isfinite(margin):
            found.append(f"gate 'equity' gates nothing: field 'equity.max_group_regression' is {margin}, not a "
                         f"finite bound")
        return found

    def gates(self, metric: str) -> list[Gate]:
        out: list[Gate] = []
        if self.min_ratio is not None:
            out.append(EquityRatio(self, self.metric or metric))
        if self.max_group_regression is not None:
            out.append(EquityRegression(self, self.metric or metric))
        return out


@dataclass(frozen=True)
class RecentWindowSpec:
    """``recent_window``: the candidate judged on the most recent labelled window of served traffic (the
    judging share the monitoring store keeps: docs/monitoring.md), against the champion on the same rows."""

    window: str = "7d"
    min_count: int = 30  # fewer labelled rows: the gate refuses, saying so
    max_regression: float = 0.0
    metric: str | None = None  # None: the policy's metric
    min_value: float | None = None


@dataclass(frozen=True)
class PromotionPolicy:
    metric: str = "macro_f1"
    min_value: float | None = 0.7  # None: no absolute floor (the baseline and champion gates still judge)
    max_regression: float = 0.0  # how much worse than the champion a candidate may be
    beat_baseline: BaselineSpec | None = None
    thresholds: Mapping[str, float] = field(default_factory=dict)
    max_regressions: Mapping[str, float] = field(default_factory=dict)
    holdout: HoldoutSpec | None = None
    signature: str = "any"
    latency_p95_ms: float | None = None
    latency_rows: int = 50
    latency_repeats: int = 3
    approvals: int = 0
    report_by: tuple[str, ...] = ()
    unseen_phrasings: UnseenSpec | None = None
    equity: EquitySpec | None = None
    model: str | None = None
    version: int | None = None
    variants: Mapping[str, Any] = field(default_factory=dict)  # checked by registry.variant_policy.VariantPolicy
    accountability: AccountabilitySpec | None = None
    recent_window: RecentWindowSpec | None = None
    monitoring: MonitoringPolicy = field(default_factory=MonitoringPolicy)  # thresholds, webhook, record default
    # where it came from: not policy fields
    source: str | None = field(default=None, compare=False)
    sha256: str | None = field(default=None, compare=False)

    def __post_init__(self):
        _check_metric("metric", self.metric)
        for key, bound in list(self.thresholds.items()) + list(self.max_regressions.items()):
            _check_metric(f"thresholds.{key}" if key in self.thresholds else f"max_regressions.{key}", key)
        if self.signature not in SIGNATURE_MODES:
            raise InvalidInput(f"policy: field 'signature' must be one of {', '.join(SIGNATURE_MODES)}, "
                               f"got {self.signature!r}")
        if self.approvals < 0:
            raise InvalidInput(f"policy: field 'approvals' must be >= 0, got {self.approvals}")
        if self.latency_p95_ms is not None and self.latency_p95_ms <= 0:
            raise InvalidInput(f"policy: field 'latency_p95_ms' must be > 0, got {self.latency_p95_ms}")
        if self.latency_rows < 1:
            raise InvalidInput(f"policy: field 'latency_rows' must be >= 1, got {self.latency_rows}")
        if self.latency_repeats < 1:
            raise InvalidInput(f"policy: field 'latency_repeats' must be >= 1, got {self.latency_repeats}")
        if self.beat_baseline is not None and not self.beat_baseline.margin >= 0:
            raise InvalidInput(f"policy: field 'beat_baseline.margin' must be >= 0, got {self.beat_baseline.margin}")
        if self.unseen_phrasings is not None:
            _check_metric("unseen_phrasings.metric", self.unseen_phrasings.metric)
            if self.unseen_phrasings.rows < 1:
                raise InvalidInput(f"policy: field 'unseen_phrasings.rows' must be >= 1, "
                                   f"got {self.unseen_phrasings.rows}")

    def never_failing(self) -> list[str]:
        """One line per gate of this policy that can never fail, saying why ([] if none)."""
        from projects.metrics import bounds  # lazily: serving imports registry

        found = []

        def floor(title: str, metric: str, bound: float | None, field_name: str):
            if bound is None:
                return
            if not math.isfinite(bound):
                found.append(f"gate '{title}' gates nothing: field '{field_name}' is {bound}, not a finite bound")
                return
            low, high = bounds(metric)
            if lower_is_better(metric) and bound >= high:
                found.append(f"gate '{title}' gates nothing: {metric} is never above {high} "
                             f"(field '{field_name}')")
            elif not lower_is_better(metric) and bound <= low:
                found.append(f"gate '{title}' gates nothing: {metric} is never below {low} "
                             f"(field '{field_name}': a floor must lie above {low:g})")

        def finite(title: str, value: float | None, field_name: str):
            if value is not None and not math.isfinite(value):
                found.append(f"gate '{title}' gates nothing: field '{field_name}' is {value}, not a finite bound")

        floor(MetricThreshold(self.metric, self.min_value).title if self.min_value is not None else "",
              self.metric, self.min_value, "min_value")
        for metric, bound in self.thresholds.items():
            floor(MetricThreshold(metric, bound).title, metric, bound, f"thresholds.{metric}")
        finite(f"{self.metric} vs champion", self.max_regression, "max_regression")
        for metric, bound in self.max_regressions.items():
            finite(f"{metric} vs champion", bound, f"max_regressions.{metric}")
        finite("latency p95", self.latency_p95_ms, "latency_p95_ms")
        if self.beat_baseline is not None:
            finite(f"{self.metric} vs baseline", self.beat_baseline.margin, "beat_baseline.margin")
        if self.unseen_phrasings is not None:
            spec = self.unseen_phrasings
            floor(UnseenPhrasings(spec).title, spec.metric, spec.min_value, "unseen_phrasings.min_value")
        if self.equity is not None:
            found += self.equity.never_failing(self.equity.metric or self.metric)
        if self.recent_window is not None:
            found += _recent_never_failing(self.recent_window_gate(), floor, finite)
        return found

    def gates(self) -> list[Gate]:
        gates: list[Gate] = []
        if self.holdout is not None and self.holdout.fingerprint:
            gates.append(HoldoutIdentity(self.holdout.label, self.holdout.fingerprint))
        if self.min_value is not None:
            gates.append(MetricThreshold(self.metric, self.min_value))
        gates += [MetricThreshold(m, v) for m, v in self.thresholds.items()]
        if self.beat_baseline is not None:
            gates.append(BeatBaseline(self.metric, self.beat_baseline.margin, self.beat_baseline.relative))
        gates.append(NoRegression(self.metric, self.max_regression))
        gates += [NoRegression(m, v) for m, v in self.max_regressions.items()]
        gates.append(SignatureCompatible())  # the serving alias's input contract: never switched off
        if self.latency_p95_ms is not None:
            gates.append(LatencyBudget(self.latency_p95_ms, self.latency_rows, self.latency_repeats))
        if self.unseen_phrasings is not None:
            gates.append(UnseenPhrasings(self.unseen_phrasings))
        if self.recent_window is not None:
            gates.append(self.recent_window_gate())
        if self.approvals:
            gates.append(ApprovalCount(self.approvals))
        if self.accountability is not None and self.accountability.high_risk:
            gates.append(HumanAccountability(self.accountability))
        if self.equity is not None:
            gates += self.equity.gates(self.metric)
        return gates

    def recent_window_gate(self) -> RecentWindow:
        """The ``recent_window`` section's gate (its metric defaults to the policy's)."""
        return RecentWindow(self.recent_window, self.recent_window.metric or self.metric)

    def variant_policy(self) -> VariantPolicy:
        """The ``variants:`` section as a :class:`registry.variant_policy.VariantPolicy`."""
        return VariantPolicy.from_dict(dict(self.variants) or None, "policy", self.source)

    def to_record(self) -> dict[str, Any]:
        """What an audit record keeps of the policy: where from, which revision, and its non-default fields."""
        default = PromotionPolicy()
        out: dict[str, Any] = {"source": self.source, "sha256": self.sha256, "version": self.version}
        for f in fields(self):
            if f.name in ("source", "sha256", "version"):
                continue
            value = getattr(self, f.name)
            if isinstance(value, MonitoringPolicy):
                if value != default.monitoring:
                    out[f.name] = value.to_record()
                continue
            if value != getattr(default, f.name) or f.name in ("metric", "min_value", "max_regression"):
                out[f.name] = asdict(value) if is_dataclass(value) else \
                    (dict(value) if isinstance(value, Mapping) else (list(value) if isinstance(value, tuple)
                                                                     else value))
        return {k: v for k, v in out.items() if v is not None}

    # -- reading ---------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict, where: str = "policy", source: str | None = None,
                  sha256: str | None = None) -> "PromotionPolicy":
        if not isinstance(data, dict):
            raise InvalidInput(f"{where}: expected a mapping")
        known = [f.name for f in fields(cls) if f.name not in ("source", "sha256")]
        for key in data:
            if key not in known:
                raise InvalidInput(f"{where}: unknown field '{key}'{_did_you_mean(str(key), known)} "
                                   f"(known: {', '.join(sorted(known))})")
        values: dict[str, Any] = {}
        for key, raw in data.items():
            if key == "variants":  # checked here, read through variant_policy()
                VariantPolicy.from_dict(raw, where)
                values[key] = dict(raw or {})
                continue
            values[key] = _convert(key, raw, where)
        try:
            policy = cls(**values, source=source, sha256=sha256)
        except InvalidInput as err:
            raise InvalidInput(str(err).replace("policy:", f"{where}:", 1)) from None
        never = policy.never_failing()
        if never:
            raise InvalidInput(f"{where}: {never[0]}")
        return policy

    @classmethod
    def from_yaml(cls, path: str | Path) -> "PromotionPolicy":
        try:
            raw = Path(path).read_bytes()
        except FileNotFoundError:
            raise InvalidInput(f"policy file not found: {path}") from None
        except OSError as err:
            raise InvalidInput(f"policy file {path} is unreadable ({err.__class__.__name__})") from None
        return cls.from_bytes(raw, str(path))

    @classmethod
    def from_bytes(cls, raw: bytes, source: str) -> "PromotionPolicy":
        """A policy from a file's bytes (``source`` says where they came from); its SHA-256 is theirs."""
        path = source
        try:
            data = yaml.safe_load(raw) or {}
        except yaml.YAMLError as err:
            raise InvalidInput(f"policy file {path}: not valid YAML ({err.__class__.__name__})") from None
        return cls.from_dict(data, where=f"policy file {path}", source=str(path),
                             sha256=hashlib.sha256(raw).hexdigest())


_NUMBER = ("min_value", "max_regression", "latency_p95_ms")
_NULLABLE = ("min_value", "latency_p95_ms")
_INTEGER = ("latency_rows", "latency_repeats", "approvals", "version")
_HOLDOUT_FIELDS = [f.name for f in fields(HoldoutSpec)]


def _number(where: str, name: str, value, kind=float):
    if isinstance(value, bool) or not _is_number(value) or (kind is int and float(value) != int(float(value))):
        word = "an integer" if kind is int else "a number"
        raise InvalidInput(f"{where}: field '{name}' must be {word}, got {value!r}")
    return kind(float(value)) if kind is int else float(value)


def _convert(key: str, raw: Any, where: str) -> Any:
    if key in _NUMBER:
        return None if raw is None and key in _NULLABLE else _number(where, key, raw)
    if key in _INTEGER:
        return None if raw is None and key == "version" else _number(where, key, raw, int)
    if key in ("metric", "signature", "model"):
        if not isinstance(raw, str):
            raise InvalidInput(f"{where}: field '{key}' must be a string, got {raw!r}")
        return raw
    if key in ("thresholds", "max_regressions"):
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            raise InvalidInput(f"{where}: field '{key}' must map metric names to numbers, got {raw!r}")
        for metric in raw:
            _check_metric(f"{key}.{metric}", metric, where)
        return {str(m): _number(where, f"{key}.{m}", v) for m, v in raw.items()}
    if key == "report_by":
        raw = [raw] if isinstance(raw, str) else (raw or [])
        if not isinstance(raw, list) or not all(isinstance(c, str) for c in raw):
            raise InvalidInput(f"{where}: field 'report_by' must list column names, got {raw!r}")
        return tuple(raw)
    if key == "monitoring":
        return MonitoringPolicy.from_mapping(raw, f"{where}: monitoring")
    if key in _SECTIONS:
        return None if raw is None else _SECTIONS[key](raw, where)
    raise AssertionError(key)  # every known field is converted above


def _baseline(raw: Any, where: str) -> BaselineSpec:
    raw = {} if raw is True else raw
    sub = _mapping("beat_baseline", raw, _BASELINE_FIELDS, where)
    if "relative" in sub and not isinstance(sub["relative"], bool):
        raise InvalidInput(f"{where}: field 'beat_baseline.relative' must be true or false, "
                           f"got {sub['relative']!r}")
    if "margin" in sub:
        sub["margin"] = _number(where, "beat_baseline.margin", sub["margin"])
    return BaselineSpec(**sub)


def _unseen(raw: Any, where: str) -> UnseenSpec:
    sub = _mapping("unseen_phrasings", raw, _UNSEEN_FIELDS, where)
    for name in ("seed", "rows"):
        if name in sub:
            sub[name] = _number(where, f"unseen_phrasings.{name}", sub[name], int)
    if "min_value" in sub:
        sub["min_value"] = _number(where, "unseen_phrasings.min_value", sub["min_value"])
    for name in ("name", "metric"):
        if name in sub and not isinstance(sub[name], str):
            raise InvalidInput(f"{where}: field 'unseen_phrasings.{name}' must be a string, got {sub[name]!r}")
    if "min_value" not in sub:
        raise InvalidInput(f"{where}: field 'unseen_phrasings.min_value' is missing (the floor on the "
                           f"unseen phrasings)")
    return UnseenSpec(**sub)


def _holdout(raw: Any, where: str) -> HoldoutSpec:
    if isinstance(raw, str):
        raw = {"name": raw}
    raw = _mapping("holdout", raw, _HOLDOUT_FIELDS, where)
    spec = {}
    for sub, value in raw.items():
        if sub in ("seed", "rows"):
            spec[sub] = None if value is None and sub == "rows" else _number(where, f"holdout.{sub}", value, int)
        elif value is not None and not isinstance(value, str):
            raise InvalidInput(f"{where}: field 'holdout.{sub}' must be a string, got {value!r}")
        else:
            spec[sub] = value
    return HoldoutSpec(**spec)


def _accountability(raw: Any, where: str) -> AccountabilitySpec:
    sub = _mapping("accountability", raw, _ACCOUNTABILITY_FIELDS, where)
    if "high_risk" in sub and not isinstance(sub["high_risk"], bool):
        raise InvalidInput(f"{where}: field 'accountability.high_risk' must be true or false, got {sub['high_risk']!r}")
    if "required" in sub:
        names = [sub["required"]] if isinstance(sub["required"], str) else (sub["required"] or [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InvalidInput(f"{where}: field 'accountability.required' must list fields of transparency.yaml, "
                               f"got {sub['required']!r}")
        for name in names:
            if name not in HUMAN_FIELDS:
                raise InvalidInput(f"{where}: field 'accountability.required': unknown field '{name}'"
                                   f"{_did_you_mean(name, HUMAN_FIELDS)} (fields: docs/accountability.md)")
        sub["required"] = tuple(dict.fromkeys(names))
    if sub.get("max_age_days") is not None:
        sub["max_age_days"] = _number(where, "accountability.max_age_days", sub["max_age_days"], int)
        if sub["max_age_days"] < 1:
            raise InvalidInput(f"{where}: field 'accountability.max_age_days' must be >= 1, "
                               f"got {sub['max_age_days']}")
    return AccountabilitySpec(**sub)


def _equity(raw: Any, where: str) -> EquitySpec:
    """The ``equity:`` section (``true``: every default); ranges are :class:`EquitySpec`'s to check."""
    sub = _mapping("equity", {} if raw is True else raw, _EQUITY_FIELDS, where)
    for name in ("min_count", "resamples", "seed"):
        if name in sub:
            sub[name] = _number(where, f"equity.{name}", sub[name], int)
    for name in ("min_ratio", "max_group_regression", "confidence"):
        if name in sub and not (sub[name] is None and name != "confidence"):
            sub[name] = _number(where, f"equity.{name}", sub[name])
    for name in ("by", "metric"):
        if name in sub and not isinstance(sub[name], str) and not (name == "metric" and sub[name] is None):
            raise InvalidInput(f"{where}: field 'equity.{name}' must be a string, got {sub[name]!r}")
    try:
        return EquitySpec(**sub)
    except InvalidInput as err:
        raise InvalidInput(str(err).replace("policy:", f"{where}:", 1)) from None


_EQUITY_FIELDS = [f.name for f in fields(EquitySpec)]


# -- recent_window --------------------------------------------------------------------------------
_RECENT_FIELDS = [f.name for f in fields(RecentWindowSpec)]


def _recent(raw: Any, where: str) -> RecentWindowSpec:
    sub = _mapping("recent_window", raw, _RECENT_FIELDS, where)
    window = str(sub.get("window", RecentWindowSpec.window))
    try:
        parse_window(window)
    except InvalidInput as err:
        raise InvalidInput(f"{where}: field 'recent_window.window': {err}") from None
    sub["window"] = window.strip()
    if "min_count" in sub:
        sub["min_count"] = _number(where, "recent_window.min_count", sub["min_count"], int)
        if sub["min_count"] < 1:
            raise InvalidInput(f"{where}: field 'recent_window.min_count' must be >= 1, got {sub['min_count']}")
    if "max_regression" in sub:
        sub["max_regression"] = _number(where, "recent_window.max_regression", sub["max_regression"])
    if sub.get("min_value") is not None:
        sub["min_value"] = _number(where, "recent_window.min_value", sub["min_value"])
    if sub.get("metric") is not None:
        if not isinstance(sub["metric"], str):
            raise InvalidInput(f"{where}: field 'recent_window.metric' must be a string, got {sub['metric']!r}")
        _check_metric("recent_window.metric", sub["metric"], where)
    return RecentWindowSpec(**sub)


def _recent_never_failing(gate: RecentWindow, floor, finite) -> list[str]:
    """Why the recent-window gate can never fail ([] if it can): a non-finite bound, a floor below the metric's
    range, or a tolerance as wide as the metric's whole range with no floor."""
    from projects.metrics import bounds

    spec, extra = gate.spec, []
    floor(gate.title, gate.metric, spec.min_value, "recent_window.min_value")
    finite(gate.title, spec.max_regression, "recent_window.max_regression")
    low, high = bounds(gate.metric)
    if spec.min_value is None and math.isfinite(spec.max_regression) and math.isfinite(high - low) \
            and spec.max_regression >= high - low:
        extra.append(f"gate '{gate.title}' gates nothing: {gate.metric} lies in [{low:g}, {high:g}], so a "
                      f"tolerance of {spec.max_regression:g} (field 'recent_window.max_regression') never refuses")
    return extra


_SECTIONS = {"beat_baseline": _baseline, "unseen_phrasings": _unseen, "holdout": _holdout,
             "accountability": _accountability, "equity": _equity,
             "recent_window": _recent}


_BASELINE_FIELDS = [f.name for f in fields(BaselineSpec)]
_UNSEEN_FIELDS = [f.name for f in fields(UnseenSpec)]
_ACCOUNTABILITY_FIELDS = [f.name for f in fields(AccountabilitySpec)]


def _mapping(key: str, raw: Any, known: list[str], where: str) -> dict:
    if not isinstance(raw, dict):
        raise InvalidInput(f"{where}: field '{key}' must be a mapping ({', '.join(known)})")
    for sub in raw:
        if sub not in known:
            raise InvalidInput(f"{where}: unknown field '{key}.{sub}'{_did_you_mean(str(sub), known)}"
                               f" (known: {', '.join(known)})")
    return dict(raw)


def _check_metric(name: str, metric: str, where: str = "policy") -> None:
    if metric not in METRICS:
        from projects.metrics import names  # every accepted name, scikit-learn scorers included

        raise InvalidInput(f"{where}: field '{name}': unknown metric '{metric}'{_did_you_mean(str(metric), names())}"
                           f" (known: {', '.join(METRICS)} or a scikit-learn scorer computed from predictions)")


def _did_you_mean(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _is_number(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False
