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
from typing import Any, Mapping, Union

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


def check_value(name: str, param: Param, value: Any) -> Any:
    """``value`` as parameter ``name`` declared as ``param`` takes it; raise :class:`InvalidInput` if it cannot.

    A number for a :class:`Float` (an integer is read as a float), a whole number for an :class:`Int`, one
    of the choices for a :class:`Categorical`. The ranges of Float and Int are where tuning searches, not
    limits on what a training may be given, except that a log-scale parameter must be positive.
    """
    if isinstance(param, Categorical):
        for choice in param.choices:
            if value == choice and isinstance(value, bool) == isinstance(choice, bool):
                return choice
        raise InvalidInput(f"parameter '{name}': expected one of {list(param.choices)}, got {value!r}")
    if isinstance(param, Int):
        whole = isinstance(value, int) or isinstance(value, float) and value.is_integer()
        if isinstance(value, bool) or not whole:
            raise InvalidInput(f"parameter '{name}': expected a whole number, got {value!r}")
        value = int(value)
    elif isinstance(param, Float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise InvalidInput(f"parameter '{name}': expected a number, got {value!r}")
        value = float(value)
    else:
        raise TypeError(f"not a search-space parameter: {param!r}")
    if param.log and value <= 0:
        raise InvalidInput(f"parameter '{name}': expected a positive number (it is searched on a log scale), "
                           f"got {value!r}")
    return value


def check_default_typed(name: str, default: Any, value: Any) -> Any:
    """A parameter with a default but no search space takes a value of the default's type."""
    if isinstance(default, bool) or isinstance(default, str):
        if type(value) is not type(default):
            raise InvalidInput(f"parameter '{name}': expected {'true or false' if isinstance(default, bool) else 'a string'}"
                               f", got {value!r}")
        return value
    if isinstance(default, int):
        return check_value(name, Int(-(2 ** 62), 2 ** 62), value)
    if isinstance(default, float):
        return check_value(name, Float(-float("inf"), float("inf")), value)
    return value


def check_params(family: str, space: SearchSpace, defaults: Mapping[str, Any], params: Mapping[str, Any]
                 ) -> dict[str, Any]:
    """The defaults with ``params`` on top, each checked against the declared space (or its default's type).

    Raises :class:`InvalidInput` for a name the family does not declare, or a value its declaration
    does not take, naming both.
    """
    known = set(space) | set(defaults)
    checked = dict(defaults)
    for name, value in (params or {}).items():
        if name not in known:
            raise InvalidInput(f"family '{family}' has no parameter '{name}' (known: {', '.join(sorted(known))})")
        try:
            checked[name] = (check_value(name, space[name], value) if name in space
                             else check_default_typed(name, defaults[name], value))
        except InvalidInput as bad:
            raise InvalidInput(f"family '{family}': {bad}") from None
    return checked
