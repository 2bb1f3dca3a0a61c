"""Samplers and pruners chosen by name."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from civicml.errors import InvalidInput

if TYPE_CHECKING:  # imported where used: the CLI reads the names below without loading Optuna
    import optuna

SAMPLERS = ("tpe", "random", "grid", "nsga2")
PRUNERS = ("median", "halving", "hyperband", "none")


def make_sampler(name: str, seed: int | None = None, grid: dict | None = None) -> optuna.samplers.BaseSampler:
    import optuna

    if name == "tpe":
        with warnings.catch_warnings():  # multivariate TPE with groups: conditional spaces, one group per family
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "grid":
        if not grid:
            raise InvalidInput("the grid sampler needs a finite grid: give every parameter a list of values "
                               "(--set FAMILY.PARAM=a,b,c or a --space file)")
        return optuna.samplers.GridSampler(grid, seed=seed)
    raise InvalidInput(f"unknown sampler '{name}' (known: {', '.join(SAMPLERS)})")


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    if name == "none":
        return optuna.pruners.NopPruner()
    raise InvalidInput(f"unknown pruner '{name}' (known: {', '.join(PRUNERS)})")
