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

import yaml

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


def parse_assignment(text: str, spaces: Mapping[str, SearchSpace]) -> tuple[str, str, Param]:
    """``svm.C=0.1:10:log`` -> ``("svm", "C", Float(0.1, 10, log=True))``.

    Forms: ``LOW:HIGH`` (the declared parameter's type), ``LOW:HIGH:log``,
    ``LOW:HIGH:step=N`` (int), ``a,b,c`` (choices, read as YAML scalars), ``VALUE``
    (fixed).
    """
    key, sep, value = text.partition("=")
    family, dot, name = key.strip().partition(".")
    if not sep or not dot or not name or not value.strip():
        raise InvalidInput(f"--set expects FAMILY.PARAM=SPEC (e.g. svm.C=0.1:10:log), got '{text}'")
    if family not in spaces:
        raise InvalidInput(f"--set {key}: no model family '{family}' in this study "
                           f"(families: {', '.join(sorted(spaces))})")
    declared = spaces[family].get(name)
    if declared is None:
        raise InvalidInput(f"--set {key}: family '{family}' has no parameter '{name}' "
                           f"(known: {', '.join(sorted(spaces[family]))})")
    value = value.strip()
    if ":" in value and isinstance(declared, Categorical):
        raise InvalidInput(f"--set {key}: '{name}' is a choice of {list(declared.choices)}, not a range; "
                           f"give values, e.g. --set {key}={','.join(map(str, declared.choices))}")
    if ":" in value:
        parts = value.split(":")
        log = "log" in parts[2:]
        steps = [p for p in parts[2:] if p.startswith("step=")]
        unknown = [p for p in parts[2:] if p != "log" and not p.startswith("step=")]
        if len(parts) < 2 or unknown:
            raise InvalidInput(f"--set {key}: range must be LOW:HIGH[:log][:step=N], got '{value}'")
        try:
            if isinstance(declared, Float) and not steps:
                return family, name, Float(float(parts[0]), float(parts[1]), log)
            step = int(steps[0][5:]) if steps else 1
            return family, name, Int(int(parts[0]), int(parts[1]), log, step)
        except ValueError as bad:
            raise InvalidInput(f"--set {key}: {bad}") from None
    choices = []
    for text_value in value.split(","):
        try:
            choices.append(check_value(name, declared, yaml.safe_load(text_value.strip())))
        except InvalidInput as bad:
            raise InvalidInput(f"--set {key}: {bad}") from None
        except yaml.YAMLError:
            raise InvalidInput(f"--set {key}: '{text_value.strip()}' is not a value") from None
    return family, name, Categorical(choices)
