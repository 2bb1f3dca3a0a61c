"""The ``monitoring:`` section of a promotion policy: what is watched once a version serves, and who is told.

A leaf room of the registry (it imports only the ground), read by :mod:`registry.policy` as one of the policy's
fields and used by ``monitoring`` (through the registry's face) and the top floor::

    monitoring:
      window: 7d            # the report's time window: 30m, 12h, 7d, 2w
      drift_p: 0.01         # Benjamini-Hochberg level for drift, per window, across columns and groups
      min_count: 30         # rows a window needs in a group to be tested or judged ("too few" otherwise)
      min_quality: 0.80     # the live metric's floor (a ceiling for an error such as mae), per group
      metric: accuracy      # accuracy, macro_f1 (classifiers) or mae (regressors)
      webhook: https://alerts.example.org/civicml   # new alerts are POSTed here as JSON (optional)
      record: sample=0.1    # what `civicml serve` records when --record is not given: off, all, sample=R

A field CivicML does not know is an error that names it ("did you mean"), as everywhere in a policy.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping
from urllib.parse import urlsplit

from civicml.errors import InvalidInput, did_you_mean

METRICS = {"accuracy": "maximize", "macro_f1": "maximize", "mae": "minimize"}
# what drift compares live answers with: the training sample logged with the model, the held-out set that
# judged it, or the answers recorded in the same calendar weeks a year earlier (calibrated on that history)
REFERENCES = ("training", "held_out", "last_year")
_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_window(window: str | int | float) -> float:
    """Seconds in a window written ``30m``, ``12h``, ``7d`` or ``2w`` (or a number of seconds)."""
    if isinstance(window, (int, float)) and not isinstance(window, bool):
        seconds = float(window)
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*", str(window).lower())
        if not match:
            raise InvalidInput(f"window must look like 30m, 12h, 7d or 2w, got {window!r}")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not seconds >= 60:
        raise InvalidInput(f"window must be at least a minute, got {window!r}")
    return seconds


def record_mode(text: str | None) -> tuple[str, float]:
    """``(mode, rate)`` of a record policy: ``off``, ``all`` or ``sample=R`` (0 < R <= 1); one line if not."""
    raw = "off" if text is None else str(text).strip().lower()
    if raw in ("off", "all"):
        return raw, 0.0 if raw == "off" else 1.0
    if raw.startswith("sample="):
        try:
            rate = float(raw[len("sample="):])
        except ValueError:
            rate = float("nan")
        if not (0.0 < rate <= 1.0):
            raise InvalidInput(f"record policy 'sample=R' needs 0 < R <= 1, got {text!r}")
        return "sample", rate
    raise InvalidInput(f"record policy must be off, all or sample=R (0 < R <= 1), got {text!r}")


def _check_webhook(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"monitoring: field 'webhook' must be an http(s) URL, got {url!r}")


@dataclass(frozen=True)
class MonitoringPolicy:
    window: str = "7d"
    drift_p: float = 0.01
    min_count: int = 30
    min_quality: float | None = None
    metric: str = "accuracy"
    webhook: str | None = None
    record: str = "off"
    reference: str = "training"  # what drift compares with: training, held_out or last_year

    def __post_init__(self):
        try:
            parse_window(self.window)
            record_mode(self.record)
        except InvalidInput as err:
            raise InvalidInput(f"monitoring: {err}") from None
        if self.metric not in METRICS:
            raise InvalidInput(f"monitoring: field 'metric' must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if self.min_quality is not None and not math.isfinite(self.min_quality):
            raise InvalidInput(f"monitoring: field 'min_quality' must be a finite number, got {self.min_quality}")
        if not (0 < self.drift_p < 1):
            raise InvalidInput(f"monitoring: field 'drift_p' must be between 0 and 1, got {self.drift_p}")
        if self.min_count < 2:
            raise InvalidInput(f"monitoring: field 'min_count' must be at least 2, got {self.min_count}")
        if self.webhook is not None:
            _check_webhook(self.webhook)
        if self.reference not in REFERENCES:
            raise InvalidInput(f"monitoring: field 'reference' must be one of {', '.join(REFERENCES)}, got "
                               f"{self.reference!r}{did_you_mean(str(self.reference), REFERENCES)}")

    @property
    def lower_is_better(self) -> bool:
        return METRICS[self.metric] == "minimize"

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None, where: str = "monitoring") -> "MonitoringPolicy":
        """From a policy's ``monitoring:`` section; an unknown field is an error that names it."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise InvalidInput(f"{where}: expected a mapping of fields, got {type(data).__name__}")
        kinds = {f.name: str(f.type) for f in fields(cls)}
        values = {}
        for key, raw in data.items():
            if key not in kinds:
                raise InvalidInput(f"{where}: unknown field '{key}'{did_you_mean(key, kinds)} "
                                   f"(known: {', '.join(kinds)})")
            values[key] = _convert(key, raw, kinds[key], where)
        try:
            return cls(**values)
        except InvalidInput as err:
            raise InvalidInput(str(err).replace("monitoring:", f"{where}:", 1)) from None

    def to_record(self) -> dict[str, Any]:
        """The thresholds as an audit record keeps them (the webhook by its host: its path may be a secret)."""
        out = {k: v for k, v in asdict(self).items() if v is not None}
        if self.webhook:
            out["webhook"] = webhook_host(self.webhook)
        return out


def webhook_host(url: str) -> str:
    """``https://host:port/...``: a webhook as records and messages name it (its path and query may hold a
    token, as chat webhooks' do)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/..."


def _convert(key: str, raw: Any, kind: str, where: str) -> Any:
    if raw is None and "None" in kind:
        return None
    if "float" in kind:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise InvalidInput(f"{where}: field '{key}' must be a number, got {raw!r}")
        return float(raw)
    if kind == "int":
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise InvalidInput(f"{where}: field '{key}' must be a whole number, got {raw!r}")
        return raw
    if not isinstance(raw, str):
        raise InvalidInput(f"{where}: field '{key}' must be text, got {raw!r}")
    return raw


__all__ = ["METRICS", "MonitoringPolicy", "parse_window", "record_mode", "webhook_host"]
