"""Optuna studies over the use cases' model families, tracked as nested MLflow runs.

Public face::

    from tuning import tune
    result = tune(use_case, dataset, n_trials=20, storage="postgresql://...", study_name="routing", workers=2)
    result = tune(use_case, dataset, objectives="macro_f1:max,latency_p95_ms:min", select="latency_p95_ms<=5")

Each name is imported from its module when first used (:func:`civicml.lazy.lazy_face`): the CLI reads
``SAMPLERS`` and ``PRUNERS`` to build its parser without importing Optuna, MLflow or the training code.
"""

from typing import TYPE_CHECKING

from civicml.lazy import lazy_face

if TYPE_CHECKING:
    from tuning.choices import PRUNERS, SAMPLERS
    from tuning.objectives import Objective, SelectionRule, parse_objectives
    from tuning.space import describe, grid, load_overrides, parse_assignment
    from tuning.storage import Heartbeat, storage_kind
    from tuning.study import StudyPlan, StudyResult, TuneOptions, plan_study, tune

__getattr__, __dir__ = lazy_face(__name__, {
    "tuning.choices": ("PRUNERS", "SAMPLERS"),
    "tuning.objectives": ("Objective", "SelectionRule", "parse_objectives"),
    "tuning.space": ("describe", "grid", "load_overrides", "parse_assignment"),
    "tuning.storage": ("Heartbeat", "storage_kind"),
    "tuning.study": ("StudyPlan", "StudyResult", "TuneOptions", "plan_study", "tune"),
})

__all__ = ["PRUNERS", "SAMPLERS", "Heartbeat", "Objective", "SelectionRule", "StudyResult", "describe", "grid",
           "load_overrides", "parse_assignment", "parse_objectives", "plan_study", "StudyPlan", "storage_kind", "tune", "TuneOptions"]
