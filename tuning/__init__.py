"""Optuna studies over the use cases' model families, tracked as nested MLflow runs.

Public face::

    from tuning import tune
    result = tune(use_case, dataset, n_trials=20, storage="postgresql://...", study_name="routing")
"""

from tuning.choices import PRUNERS, SAMPLERS
from tuning.space import describe, load_overrides
from tuning.study import StudyResult, tune

__all__ = ["PRUNERS", "SAMPLERS", "StudyResult", "describe", "load_overrides", "tune"]
