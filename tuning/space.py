"""Turn :mod:`projects.space` declarations into Optuna suggestions, and read overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import optuna
import yaml

from civicml.errors import InvalidInput
from projects.space import Categorical, Float, Int, Param, SearchSpace, check_value, param_from_dict


def suggest(trial: optuna.Trial, name: str, param: Param) -> Any:
    if isinstance(param, Float):
        return trial.suggest_float(name, param.low, param.high, log=param.log)
    if isinstance(param, Int):
        return trial.suggest_int(name, param.low, param.high, log=param.log, step=param.step)
    if isinstance(param, Categorical):
        return trial.suggest_categorical(name, list(param.choices))
    raise TypeError(f"not a search-space parameter: {param!r}")


def describe(space: SearchSpace) -> list[str]:
    """One readable line per parameter, e.g. ``C: float [0.05, 50] log``."""
    lines = []
    for name, p in space.items():
        if isinstance(p, Categorical):
            lines.append(f"{name}: one of {list(p.choices)}")
        else:
            kind = "float" if isinstance(p, Float) else "int"
            step = f" step {p.step}" if isinstance(p, Int) and p.step != 1 else ""
            lines.append(f"{name}: {kind} [{p.low:g}, {p.high:g}]{' log' if p.log else ''}{step}")
    return lines


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


def grid(space: SearchSpace, prefix: str = "", limit: int = 64) -> dict[str, list]:
    """Every parameter's finite list of values, for the grid sampler; raise if one has none."""
    out: dict[str, list] = {}
    for name, p in space.items():
        if isinstance(p, Categorical):
            out[prefix + name] = list(p.choices)
        elif isinstance(p, Int) and not p.log and (p.high - p.low) // p.step + 1 <= limit:
            out[prefix + name] = list(range(p.low, p.high + 1, p.step))
        else:
            raise InvalidInput(f"the grid sampler needs a finite grid, but '{prefix}{name}' is a "
                               f"{'float' if isinstance(p, Float) else 'wide or log int'} range; give it values, "
                               f"e.g. --set {prefix}{name}=1,3,10")
    return out


def load_overrides(path: str | Path) -> dict[str, SearchSpace]:
    """Read a YAML file ``{family: {param: spec}}`` of search-space overrides.

    A spec is ``{type: float, low: .., high: .., log: true}``, ``{type: int, ...}``,
    ``{type: categorical, choices: [...]}`` or a plain list of choices.
    """
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise InvalidInput(f"search space file not found: {path}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or err.__class__.__name__
        raise InvalidInput(f"search space file {path}: not valid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"search space file {path}: expected a mapping of model family -> parameters")
    out: dict[str, SearchSpace] = {}
    for family, params in data.items():
        if not isinstance(params, dict):
            raise InvalidInput(f"search space file {path}: '{family}' must map parameter names to specs")
        out[str(family)] = {str(k): param_from_dict(f"{family}.{k}", v) for k, v in params.items()}
    return out


def merged_space(family: str, declared: SearchSpace, overrides: Mapping[str, SearchSpace] | None) -> SearchSpace:
    space = dict(declared)
    for name, param in (overrides or {}).get(family, {}).items():
        if name not in declared:
            raise InvalidInput(f"search space override '{family}.{name}': family '{family}' has no parameter "
                               f"'{name}' (known: {', '.join(sorted(declared))})")
        space[name] = _fits(f"{family}.{name}", declared[name], param)
    return space


def _fits(name: str, declared: Param, param: Param) -> Param:
    """An override takes values the declared parameter takes (what training checks, checked up front)."""
    if isinstance(param, Categorical):
        return Categorical([check_value(name, declared, choice) for choice in param.choices])
    if isinstance(declared, Categorical) or isinstance(declared, Int) and isinstance(param, Float):
        kind = "a choice" if isinstance(declared, Categorical) else "a whole number"
        raise InvalidInput(f"search space override '{name}': the parameter is {kind}; a "
                           f"{'float' if isinstance(param, Float) else 'int'} range does not fit it")
    return param
