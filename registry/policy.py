"""A promotion policy: the gates a version must pass before it serves.

One YAML file per registered model, kept in the project and versioned with its
code; every promotion records the file's SHA-256 and ``version``. Fields::

    version: 3                      # the policy's own revision number (recorded)
    model: service-requests-router  # the registered model it governs (checked)
    metric: macro_f1                # primary metric, re-evaluated on the held-out set
    min_value: 0.80                 # absolute threshold for ``metric``
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
    variants:                       # bounds for compressed variants, and which ones promotion builds
      max_quality_loss: 0.02        # (registry.variants.VariantPolicy; docs/variants.md)
      build: [onnx]

``PromotionPolicy()`` is the minimal policy (threshold and no regression on one
metric, and the input contract); every other gate is switched on by its field. A
field CivicML does not know is an error that names it.

Which policy governs a registered model is the registry's business, not the
caller's: see :mod:`registry.inputs` (recorded with the model at registration).
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import yaml

from civicml.errors import InvalidInput
from registry.gates import (METRICS, ApprovalCount, Gate, HoldoutIdentity, LatencyBudget, MetricThreshold,
                            NoRegression, SignatureCompatible)

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
class PromotionPolicy:
    metric: str = "macro_f1"
    min_value: float = 0.7
    max_regression: float = 0.0  # how much worse than the champion a candidate may be
    thresholds: Mapping[str, float] = field(default_factory=dict)
    max_regressions: Mapping[str, float] = field(default_factory=dict)
    holdout: HoldoutSpec | None = None
    signature: str = "any"
    latency_p95_ms: float | None = None
    latency_rows: int = 50
    latency_repeats: int = 3
    approvals: int = 0
    report_by: tuple[str, ...] = ()
    model: str | None = None
    version: int | None = None
    variants: Mapping[str, Any] = field(default_factory=dict)  # checked by registry.variants.VariantPolicy
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

    def gates(self) -> list[Gate]:
        gates: list[Gate] = []
        if self.holdout is not None and self.holdout.fingerprint:
            gates.append(HoldoutIdentity(self.holdout.label, self.holdout.fingerprint))
        gates.append(MetricThreshold(self.metric, self.min_value))
        gates += [MetricThreshold(m, v) for m, v in self.thresholds.items()]
        gates.append(NoRegression(self.metric, self.max_regression))
        gates += [NoRegression(m, v) for m, v in self.max_regressions.items()]
        gates.append(SignatureCompatible())  # the serving alias's input contract: never switched off
        if self.latency_p95_ms is not None:
            gates.append(LatencyBudget(self.latency_p95_ms, self.latency_rows, self.latency_repeats))
        if self.approvals:
            gates.append(ApprovalCount(self.approvals))
        return gates

    def variant_policy(self):
        """The ``variants:`` section as a :class:`registry.variants.VariantPolicy`."""
        from registry.variants import VariantPolicy  # noqa: PLC0415 - registry.variants reads policies too

        return VariantPolicy.from_dict(dict(self.variants) or None, "policy", self.source)

    def to_record(self) -> dict[str, Any]:
        """What an audit record keeps of the policy: where from, which revision, and its non-default fields."""
        default = PromotionPolicy()
        out: dict[str, Any] = {"source": self.source, "sha256": self.sha256, "version": self.version}
        for f in fields(self):
            if f.name in ("source", "sha256", "version"):
                continue
            value = getattr(self, f.name)
            if value != getattr(default, f.name) or f.name in ("metric", "min_value", "max_regression"):
                out[f.name] = asdict(value) if isinstance(value, HoldoutSpec) else \
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
                from registry.variants import VariantPolicy  # noqa: PLC0415

                VariantPolicy.from_dict(raw, where)
                values[key] = dict(raw or {})
                continue
            values[key] = _convert(key, raw, where)
        try:
            return cls(**values, source=source, sha256=sha256)
        except InvalidInput as err:
            raise InvalidInput(str(err).replace("policy:", f"{where}:", 1)) from None

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
_INTEGER = ("latency_rows", "latency_repeats", "approvals", "version")
_HOLDOUT_FIELDS = [f.name for f in fields(HoldoutSpec)]


def _convert(key: str, raw: Any, where: str) -> Any:
    def number(name, value, kind=float):
        if isinstance(value, bool) or not _is_number(value) or (kind is int and float(value) != int(float(value))):
            word = "an integer" if kind is int else "a number"
            raise InvalidInput(f"{where}: field '{name}' must be {word}, got {value!r}")
        return kind(float(value)) if kind is int else float(value)

    if key in _NUMBER:
        return None if raw is None and key == "latency_p95_ms" else number(key, raw)
    if key in _INTEGER:
        return None if raw is None and key == "version" else number(key, raw, int)
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
        return {str(m): number(f"{key}.{m}", v) for m, v in raw.items()}
    if key == "report_by":
        raw = [raw] if isinstance(raw, str) else (raw or [])
        if not isinstance(raw, list) or not all(isinstance(c, str) for c in raw):
            raise InvalidInput(f"{where}: field 'report_by' must list column names, got {raw!r}")
        return tuple(raw)
    if key == "holdout":
        if raw is None:
            return None
        if isinstance(raw, str):
            raw = {"name": raw}
        if not isinstance(raw, dict):
            raise InvalidInput(f"{where}: field 'holdout' must be a mapping ({', '.join(_HOLDOUT_FIELDS)})")
        for sub in raw:
            if sub not in _HOLDOUT_FIELDS:
                raise InvalidInput(f"{where}: unknown field 'holdout.{sub}'{_did_you_mean(str(sub), _HOLDOUT_FIELDS)}"
                                   f" (known: {', '.join(_HOLDOUT_FIELDS)})")
        spec = {}
        for sub, value in raw.items():
            if sub in ("seed", "rows"):
                spec[sub] = None if value is None and sub == "rows" else number(f"holdout.{sub}", value, int)
            elif value is not None and not isinstance(value, str):
                raise InvalidInput(f"{where}: field 'holdout.{sub}' must be a string, got {value!r}")
            else:
                spec[sub] = value
        return HoldoutSpec(**spec)
    raise AssertionError(key)  # every known field is converted above


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
