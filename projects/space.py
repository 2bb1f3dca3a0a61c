"""Search-space declarations, written next to the training code that uses them.

They are plain data: ``tuning`` turns them into Optuna suggestions, the CLI and
YAML files override them, and a reader sees name, range, scale and choices at a
glance::

    SPACE = {
        "C": Float(1e-2, 1e2, log=True),
        "max_depth": Int(2, 30),
        "kernel": Categorical(["linear", "rbf"]),
    }
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from civicml.errors import InvalidInput


@dataclass(frozen=True)
class Float:
    low: float
    high: float
    log: bool = False

    def __post_init__(self):
        if not self.low < self.high:
            raise InvalidInput(f"Float range needs low < high, got [{self.low}, {self.high}]")
        if self.log and self.low <= 0:
            raise InvalidInput(f"a log-scale Float needs low > 0, got {self.low}")


@dataclass(frozen=True)
class Int:
    low: int
    high: int
    log: bool = False
    step: int = 1

    def __post_init__(self):
        if not self.low <= self.high:
            raise InvalidInput(f"Int range needs low <= high, got [{self.low}, {self.high}]")
        if self.log and self.low <= 0:
            raise InvalidInput(f"a log-scale Int needs low > 0, got {self.low}")


@dataclass(frozen=True)
class Categorical:
    choices: tuple

    def __init__(self, choices):
        choices = tuple(choices)
        if not choices:
            raise InvalidInput("Categorical needs at least one choice")
        object.__setattr__(self, "choices", choices)


Param = Union[Float, Int, Categorical]
SearchSpace = dict[str, Param]


def param_from_dict(name: str, spec: Any) -> Param:
    """Read one parameter from YAML-like data; raise :class:`InvalidInput` naming the field."""
    if isinstance(spec, list):
        return Categorical(spec)
    if not isinstance(spec, dict):
        raise InvalidInput(f"search space field '{name}': expected a mapping or a list of choices, got {spec!r}")
    kind = spec.get("type")
    known = {"float", "int", "categorical"}
    if kind not in known:
        raise InvalidInput(f"search space field '{name}.type': expected one of {sorted(known)}, got {kind!r}")
    allowed = {"float": {"type", "low", "high", "log"}, "int": {"type", "low", "high", "log", "step"},
               "categorical": {"type", "choices"}}[kind]
    extra = set(spec) - allowed
    if extra:
        raise InvalidInput(f"search space field '{name}.{sorted(extra)[0]}': not a field of a {kind} parameter")
    try:
        if kind == "categorical":
            return Categorical(spec["choices"])
        if kind == "float":
            return Float(float(spec["low"]), float(spec["high"]), bool(spec.get("log", False)))
        return Int(int(spec["low"]), int(spec["high"]), bool(spec.get("log", False)), int(spec.get("step", 1)))
    except KeyError as missing:
        raise InvalidInput(f"search space field '{name}.{missing.args[0]}' is missing") from None
    except (TypeError, ValueError) as bad:
        raise InvalidInput(f"search space field '{name}': {bad}") from None
