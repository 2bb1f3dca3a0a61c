"""Turn :mod:`projects.space` declarations into Optuna suggestions, and read overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import optuna
import yaml

from civicml.errors import InvalidInput
from projects.space import (Categorical, Float, Int, Param, SearchSpace, check_value, param_from_dict,  # noqa: F401
                            parse_assignment)


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
