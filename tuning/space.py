"""Turn :mod:`projects.space` declarations into Optuna suggestions, and read overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import optuna
import yaml

from civicml.errors import InvalidInput
from projects.space import Categorical, Float, Int, Param, SearchSpace, param_from_dict


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
            lines.append(f"{name}: {kind} [{p.low}, {p.high}]{' log' if p.log else ''}")
    return lines


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
        raise InvalidInput(f"search space file {path}: not valid YAML ({err.__class__.__name__})") from None
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
        space[name] = param
    return space
