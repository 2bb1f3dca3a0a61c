"""An Optuna study mapped onto MLflow: one parent run per study, one nested run per trial.

Re-running with the same study name (and storage) resumes the study and adds
its new trials under the same parent run.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import mlflow
import optuna

from civicml.errors import InvalidInput
from civicml.settings import Settings
from civicml.tracking import configure, experiment_id
from projects import Dataset, Pruned, UseCase, train
from tuning.choices import make_pruner, make_sampler
from tuning.space import merged_space, suggest

TAG_STUDY = "civicml.study"
TAG_TRIAL = "civicml.trial"


@dataclass
class StudyResult:
    study_name: str
    storage: str
    parent_run_id: str
    n_complete: int
    n_pruned: int
    n_failed: int
    best_trial: int | None
    best_value: float | None
    best_params: dict[str, Any] = field(default_factory=dict)
    best_run_id: str | None = None
    best_model_uri: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _TrialReporter:
    """Bridges a training's intermediate values to Optuna's pruning."""

    def __init__(self, trial: optuna.Trial):
        self.trial = trial

    def report(self, step: int, value: float) -> None:
        self.trial.report(value, step)
        if self.trial.should_prune():
            raise Pruned(step, value)


def _storage_kind(storage: str) -> str:
    return storage.split(":", 1)[0].split("+", 1)[0]


def _parent_run(client: mlflow.MlflowClient, exp_id: str, study_name: str) -> str | None:
    found = client.search_runs([exp_id], filter_string=f"tags.`{TAG_STUDY}` = '{study_name}' "
                               f"and tags.`mlflow.parentRunId` IS NULL", max_results=1)
    return found[0].info.run_id if found else None


def tune(
    use_case: UseCase,
    dataset: Dataset,
    *,
    n_trials: int = 10,
    families: Sequence[str] | None = None,
    study_name: str | None = None,
    storage: str | None = None,
    sampler: str = "tpe",
    pruner: str = "median",
    seed: int = 0,
    timeout: float | None = None,
    overrides: Mapping[str, Mapping] | None = None,
    settings: Settings | None = None,
    progress: bool = False,
) -> StudyResult:
    """Run ``n_trials`` more trials of a study over ``families`` of ``use_case``."""
    settings = settings or Settings.from_env()
    if n_trials < 1:
        raise InvalidInput(f"n_trials must be at least 1, got {n_trials}")
    families = list(families or use_case.families)
    for name in families:
        use_case.family(name)  # raises NotFound for an unknown family
    spaces = {f: merged_space(f, use_case.family(f).space, overrides) for f in families}
    study_name = study_name or f"{use_case.name}-study"
    storage = storage or settings.optuna_storage
    if storage.startswith("sqlite:///"):
        settings.ensure_home()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=study_name, storage=storage, load_if_exists=True,
                                direction=use_case.direction, sampler=make_sampler(sampler, seed),
                                pruner=make_pruner(pruner))
    client = configure(settings)
    exp_id = experiment_id(settings, use_case.name)
    parent_id = _parent_run(client, exp_id, study_name)
    started = time.perf_counter()
    tags = {TAG_STUDY: study_name, "civicml.storage_kind": _storage_kind(storage), "civicml.sampler": sampler,
            "civicml.pruner": pruner, "civicml.direction": use_case.direction, "civicml.use_case": use_case.name}
    better = (lambda a, b: a > b) if use_case.direction == "maximize" else (lambda a, b: a < b)

    def objective(trial: optuna.Trial) -> float:
        family = trial.suggest_categorical("family", families) if len(families) > 1 else families[0]
        params = {name: suggest(trial, f"{family}.{name}", p) for name, p in spaces[family].items()}

        def improves(metrics: dict[str, float]) -> bool:
            try:
                best = study.best_value
            except ValueError:  # no complete trial yet
                return True
            return better(metrics[use_case.metric], best)

        try:
            result = train(use_case, dataset, family, params, settings=settings, nested=True,
                           run_name=f"trial-{trial.number}", reporter=_TrialReporter(trial), seed=seed,
                           log_model=improves, tags={TAG_STUDY: study_name, TAG_TRIAL: str(trial.number)})
        except Pruned as pruned:
            raise optuna.TrialPruned(str(pruned)) from None
        trial.set_user_attr("run_id", result.run_id)
        if result.model_uri:
            trial.set_user_attr("model_uri", result.model_uri)
        return result.metrics[use_case.metric]

    callbacks = []
    bar = None
    if progress:
        from tuning.progress import ProgressBar

        bar = ProgressBar(n_trials, study_name)
        callbacks.append(bar)
    with mlflow.start_run(run_id=parent_id, experiment_id=None if parent_id else exp_id,
                          run_name=None if parent_id else study_name, tags=None if parent_id else tags):
        try:
            if bar:
                bar.start()
            study.optimize(objective, n_trials=n_trials, timeout=timeout, callbacks=callbacks,
                           catch=(ValueError, ArithmeticError))
        finally:
            if bar:
                bar.stop()
        result = _summarize(study, storage, mlflow.active_run().info.run_id, time.perf_counter() - started)
        mlflow.log_metrics({"best_value": result.best_value or float("nan"), "n_complete": result.n_complete,
                            "n_pruned": result.n_pruned, "n_failed": result.n_failed, "wall_seconds": result.seconds})
        mlflow.set_tags({"civicml.best_trial": str(result.best_trial),
                         "civicml.best_run_id": str(result.best_run_id),
                         "civicml.best_params": str(result.best_params)})
    return result


def _summarize(study: optuna.Study, storage: str, parent_run_id: str, seconds: float) -> StudyResult:
    states = [t.state for t in study.trials]
    count = lambda s: sum(1 for x in states if x == s)  # noqa: E731
    best = None
    try:
        best = study.best_trial
    except ValueError:
        pass
    return StudyResult(
        study_name=study.study_name, storage=storage, parent_run_id=parent_run_id,
        n_complete=count(optuna.trial.TrialState.COMPLETE), n_pruned=count(optuna.trial.TrialState.PRUNED),
        n_failed=count(optuna.trial.TrialState.FAIL),
        best_trial=best.number if best else None, best_value=best.value if best else None,
        best_params=dict(best.params) if best else {}, best_run_id=best.user_attrs.get("run_id") if best else None,
        best_model_uri=best.user_attrs.get("model_uri") if best else None, seconds=seconds,
    )
