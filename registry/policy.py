"""A promotion policy: the gates a version must pass before it serves."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from civicml.errors import InvalidInput
from registry.gates import Gate, MetricThreshold, NoRegression


@dataclass(frozen=True)
class PromotionPolicy:
    metric: str = "macro_f1"
    min_value: float = 0.7
    max_regression: float = 0.0  # how much worse than the champion a candidate may be

    def gates(self) -> list[Gate]:
        return [MetricThreshold(self.metric, self.min_value), NoRegression(self.metric, self.max_regression)]

    @classmethod
    def from_dict(cls, data: dict, where: str = "policy") -> "PromotionPolicy":
        if not isinstance(data, dict):
            raise InvalidInput(f"{where}: expected a mapping")
        known = {f.name for f in fields(cls)}
        for key in data:
            if key not in known:
                raise InvalidInput(f"{where}: unknown field '{key}' (known: {', '.join(sorted(known))})")
        try:
            return cls(**{k: (float(v) if k != "metric" else str(v)) for k, v in data.items()})
        except (TypeError, ValueError):
            bad = next(k for k, v in data.items() if k != "metric" and not _is_number(v))
            raise InvalidInput(f"{where}: field '{bad}' must be a number, got {data[bad]!r}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> "PromotionPolicy":
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise InvalidInput(f"policy file not found: {path}") from None
        except yaml.YAMLError as err:
            raise InvalidInput(f"policy file {path}: not valid YAML ({err.__class__.__name__})") from None
        return cls.from_dict(data, where=f"policy file {path}")


def _is_number(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False
