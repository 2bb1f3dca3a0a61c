"""What a study optimises, and which trial of a Pareto front it hands to the registry.

An objective is a metric and a direction: ``macro_f1:max``, ``latency_p95_ms:min``,
``model_size_bytes:min``. Any metric a training logs can be one; ``latency_p95_ms``
is measured by tuning itself (single-row predictions timed on validation rows).

A :class:`SelectionRule` picks one trial of the front, declared up front so the
choice is reproducible and recorded:

* ``knee`` (default): the front trial closest to the ideal point after scaling
  every objective to [0, 1] over the front;
* ``best`` with constraints, e.g. ``latency_p95_ms<=5``: the best first objective
  among front trials within every budget (``best`` may be omitted);
* ``knee,model_size_bytes<=2e6``: the knee among trials within budget.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import optuna

from civicml.errors import InvalidInput
from projects.metrics import lower_is_better

LATENCY = "latency_p95_ms"
_DIRECTIONS = {"max": "maximize", "maximize": "maximize", "min": "minimize", "minimize": "minimize"}


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: str  # "maximize" or "minimize"

    def __str__(self) -> str:
        return f"{self.metric}:{self.direction[:3]}"


def parse_objectives(text: str | Sequence[str] | None, primary: str, primary_direction: str) -> list[Objective]:
    """``"macro_f1:max,latency_p95_ms:min"`` -> objectives; a bare metric gets its natural direction."""
    if not text:
        return [Objective(primary, primary_direction)]
    items = [s.strip() for s in text.split(",")] if isinstance(text, str) else [str(s).strip() for s in text]
    out: list[Objective] = []
    for item in filter(None, items):
        metric, _, direction = item.partition(":")
        if direction:
            if direction.lower() not in _DIRECTIONS:
                raise InvalidInput(f"objective '{item}': direction must be max or min")
            direction = _DIRECTIONS[direction.lower()]
        elif metric == primary:
            direction = primary_direction
        elif lower_is_better(metric):
            direction = "minimize"
        else:
            raise InvalidInput(f"objective '{item}': say max or min, e.g. '{metric}:max'")
        if any(o.metric == metric for o in out):
            raise InvalidInput(f"objective '{metric}' is given twice")
        out.append(Objective(metric, direction))
    if not out:
        raise InvalidInput("no objective given")
    return out


def check_objectives(objectives: Sequence[Objective], logged: Sequence[str]) -> None:
    """Raise :class:`InvalidInput` for an objective no training logs: ``logged`` names what the use case's
    trainings log (``fnmatch`` patterns such as ``recall_*``); tuning measures ``latency_p95_ms`` itself."""
    import fnmatch

    known = [*logged, LATENCY]
    for objective in objectives:
        if not any(fnmatch.fnmatchcase(objective.metric, pattern) for pattern in known):
            raise InvalidInput(f"objective '{objective.metric}': no training logs such a metric "
                               f"(known: {', '.join(known)})")


@dataclass(frozen=True)
class Constraint:
    metric: str
    op: str  # "<=" or ">="
    bound: float

    def holds(self, metrics: dict[str, float]) -> bool:
        value = metrics.get(self.metric)
        if value is None or math.isnan(value):
            return False
        return value <= self.bound if self.op == "<=" else value >= self.bound

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.bound:g}"


_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=)\s*([-+0-9.eE]+)\s*$")


@dataclass(frozen=True)
class SelectionRule:
    kind: str = "knee"  # "knee" or "best"
    constraints: tuple[Constraint, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> "SelectionRule":
        if not text or not text.strip():
            return cls()
        kind, constraints = None, []
        for part in (p.strip() for p in text.split(",")):
            if part in ("knee", "best"):
                if kind is not None:
                    raise InvalidInput(f"selection rule '{text}': give 'knee' or 'best' at most once")
                kind = part
                continue
            match = _CONSTRAINT.match(part)
            if not match:
                raise InvalidInput(f"selection rule '{text}': '{part}' is not 'knee', 'best' or METRIC<=NUMBER")
            try:
                constraints.append(Constraint(match[1], match[2], float(match[3])))
            except ValueError:
                raise InvalidInput(f"selection rule '{text}': '{match[3]}' is not a number") from None
        return cls(kind or ("best" if constraints else "knee"), tuple(constraints))

    def __str__(self) -> str:
        return ",".join([self.kind, *map(str, self.constraints)])

    def pick(self, front: Sequence[optuna.trial.FrozenTrial], objectives: Sequence[Objective],
             recorded: Callable[[optuna.trial.FrozenTrial], Mapping[str, float]] | None = None,
             ) -> optuna.trial.FrozenTrial | None:
        """The chosen front trial, or ``None`` when no trial meets every constraint.

        ``recorded`` gives a trial's metrics beyond its objective values (tuning reads them from the
        trial's MLflow run); constraints on metrics that neither has are not met.
        """
        allowed = [t for t in front
                   if all(c.holds(trial_metrics(t, objectives, recorded)) for c in self.constraints)]
        if not allowed:
            return None
        if self.kind == "best" or len(objectives) == 1:
            sign = -1.0 if objectives[0].direction == "maximize" else 1.0
            return min(allowed, key=lambda t: (sign * t.values[0], t.number))
        return min(allowed, key=lambda t: (_knee_distance(t, allowed, objectives), t.number))


def _knee_distance(trial, trials, objectives) -> float:
    total = 0.0
    for i, objective in enumerate(objectives):
        values = [t.values[i] for t in trials]
        low, high = min(values), max(values)
        span = (high - low) or 1.0
        scaled = (trial.values[i] - low) / span
        total += (1.0 - scaled if objective.direction == "maximize" else scaled) ** 2
    return math.sqrt(total)


def trial_metrics(trial: optuna.trial.FrozenTrial, objectives: Sequence[Objective],
                  recorded: Callable[[optuna.trial.FrozenTrial], Mapping[str, float]] | None = None,
                  ) -> dict[str, float]:
    """The trial's recorded metrics (``recorded(trial)``, else its ``metrics`` attribute), with its objective
    values on top."""
    metrics = dict(recorded(trial) if recorded else trial.user_attrs.get("metrics", {}))
    for objective, value in zip(objectives, trial.values or ()):
        metrics[objective.metric] = value
    return metrics


def pareto_table(front: Sequence[optuna.trial.FrozenTrial], objectives: Sequence[Objective],
                 chosen: int | None) -> dict[str, list]:
    """Column-oriented table of the front (for ``mlflow.log_table`` and CSV)."""
    params = sorted({p for t in front for p in t.params})
    table: dict[str, list] = {"trial": [], **{o.metric: [] for o in objectives}, "chosen": [], "run_id": []}
    table.update({f"param.{p}": [] for p in params})
    for t in sorted(front, key=lambda t: t.number):
        table["trial"].append(t.number)
        for objective, value in zip(objectives, t.values):
            table[objective.metric].append(value)
        table["chosen"].append(t.number == chosen)
        table["run_id"].append(t.user_attrs.get("run_id"))
        for p in params:
            table[f"param.{p}"].append(str(t.params[p]) if p in t.params else None)
    return table
