"""One fit of one model family on one :class:`~projects.base.Dataset`, tracked in MLflow.

``train`` opens an MLflow run (nested under the active one when asked), logs
parameters, the data fingerprint, per-step validation values, final metrics, a
plot, and the model with its signature and input example. Intermediate values go
to a :class:`~projects.base.Reporter` too, so that a tuner can prune the run
without knowing what model it is.
"""

from __future__ import annotations

import functools
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

import mlflow
from mlflow.environment_variables import MLFLOW_RUN_ID

from civicml import interrupts
from civicml.access import require
from civicml.answers import CONFORMAL, conformal
from civicml.settings import Settings
from civicml.tracking import fluent
from civicml.tracking import experiment_id as find_experiment
from civicml.tags import (TAG_CODE_VERSION, TAG_DATA_FINGERPRINT, TAG_FAMILY, TAG_MODEL_URI, TAG_PRUNED,
                          TAG_USE_CASE)
from projects.base import Dataset, FittedModel, NullReporter, Pruned, Reporter, UseCase
from projects.evaluation import confusion_matrix_figure, curve_figure, evaluate
from projects.runlog import RunLog
from projects.sklearn_model import log_background



@dataclass
class TrainingResult:
    run_id: str
    family: str
    params: dict[str, Any]
    metrics: dict[str, float]
    model_uri: str | None
    pruned: bool = False
    history: list[tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0


class TrainingHooks:
    """What a caller (a tuner) adds to one training, at fixed points; each default does nothing.

    ``train`` calls, in order: ``split`` (the train/validation split; a tuner that trains
    many times on the same data makes it once), ``started`` (the run exists: its id; called from the
    writer thread of a :class:`~projects.runlog.BackgroundRunLog`, which creates the run),
    ``fitted`` (the model is fitted: extra metrics to log with the run's own, e.g. a
    measured latency) and ``keep_model`` (the final metrics, extra ones included: log
    the model or not). Everything a hook returns comes back in the
    :class:`TrainingResult`; no hook reaches into the training or the active run.
    """

    def split(self, use_case: UseCase, dataset: Dataset, seed: int) -> tuple[Dataset, Dataset]:
        return use_case.split(dataset, seed=seed)

    def started(self, run_id: str) -> None:
        return None

    def fitted(self, fitted: FittedModel, valid: Dataset) -> Mapping[str, float]:
        return {}

    def keep_model(self, metrics: Mapping[str, float]) -> bool:
        return True


class _RecordingReporter:
    """Logs each intermediate value to the run, then passes it on."""

    def __init__(self, inner: Reporter, metric: str, runlog: RunLog):
        self.inner = inner
        self.metric = metric
        self.runlog = runlog
        self.run_id = ""
        self.history: list[tuple[int, float]] = []

    def report(self, step: int, value: float) -> None:
        interrupts.check()
        self.history.append((int(step), float(value)))
        self.runlog.log(self.run_id, metrics={f"valid_{self.metric}": float(value)}, step=int(step))
        self.inner.report(step, value)


@functools.lru_cache(maxsize=1)
def _code_version() -> str | None:
    import subprocess
    from pathlib import Path

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def check_training(use_case: UseCase, family: str | None, params: Mapping[str, Any] | None,
                   settings: Settings | None = None) -> tuple[str, dict[str, Any]]:
    """What :func:`train` checks before it stores anything, for callers that do work first (the CLI makes
    data): the caller may train, ``family`` (default: the use case's first) exists, ``params`` fit its
    declared space. Returns the family's name and its parameters with the defaults filled in."""
    require(settings or Settings.from_env(), "train")
    family = family or next(iter(use_case.families))
    return family, use_case.family(family).check_params(params)


@dataclass(frozen=True)
class TrainOptions:
    """Where and how one fit is logged: its experiment (by name, or by id for a tuner that knows it), run
    name and tags, whether it nests under the active run, whether the model is logged (``log_model`` may
    be a predicate on the final metrics) and the data set described; how a tuner takes part (``reporter``,
    ``hooks``, a ``runlog`` that writes off the trial's critical path); the seed."""

    experiment: str | None = None
    run_name: str | None = None
    nested: bool = False
    reporter: Reporter | None = None
    seed: int = 0
    log_model: bool | Callable[[dict[str, float]], bool] = True
    tags: Mapping[str, str] | None = None
    experiment_id: str | None = None
    log_dataset: bool = True
    runlog: RunLog | None = None
    hooks: TrainingHooks | None = None


def train(use_case: UseCase, dataset: Dataset, family: str, params: Mapping[str, Any] | None = None,
          options: TrainOptions | None = None, *, settings: Settings | None = None, **choices) -> TrainingResult:
    """Fit ``family`` of ``use_case`` on ``dataset`` and log it all to MLflow.

    ``params`` are checked against the family's declared space before anything is
    stored (:meth:`~projects.base.ModelFamily.check_params`). ``log_model`` may be a
    predicate on the final metrics; ``hooks`` (:class:`TrainingHooks`) is how a tuner
    takes part (it keeps only the models of trials that may be chosen). Raises
    :class:`~projects.base.Pruned` (after marking the run pruned) if the reporter
    prunes it.

    ``options`` (a :class:`TrainOptions`) or its fields by keyword (``seed=1, tags={...}``) say where the
    fit is logged. A tuner that runs many trials passes the ``experiment_id`` it already
    knows, ``log_dataset=False`` (only runs that log a model describe the data
    set; every run keeps the fingerprint tag) and a
    :class:`~projects.runlog.BackgroundRunLog`, which writes parameters,
    metrics and tags off the trial's critical path.
    """
    settings = settings or Settings.from_env()
    require(settings, "train")
    o = replace(options or TrainOptions(), **choices)  # an unknown keyword is a TypeError, as for any call
    experiment, run_name, nested, reporter, seed = o.experiment, o.run_name, o.nested, o.reporter, o.seed
    log_model, tags, experiment_id, log_dataset, runlog, hooks = (o.log_model, o.tags, o.experiment_id,
                                                                   o.log_dataset, o.runlog, o.hooks)
    model_family = use_case.family(family)
    merged = model_family.check_params(params)  # before anything is stored (the store is created below)
    with fluent(settings):  # log_model and start_run read MLflow's process-wide URI: this home's, then back
        hooks = hooks or TrainingHooks()
        parent = mlflow.active_run() if nested else None
        exp_id = (parent.info.experiment_id if parent else experiment_id
                  or find_experiment(settings, experiment or use_case.name))
        runlog = runlog or RunLog(settings.tracking_uri)
        train_part, valid_part = hooks.split(use_case, dataset, seed)
        recorder = _RecordingReporter(reporter or NullReporter(), use_case.metric, runlog)
        started = time.perf_counter()
        run_tags = {TAG_USE_CASE: use_case.name, TAG_FAMILY: family,
                    TAG_DATA_FINGERPRINT: dataset.fingerprint}
        code = _code_version()
        if code:
            run_tags[TAG_CODE_VERSION] = code
        run_tags.update(tags or {})
        if not nested and MLFLOW_RUN_ID.get():  # inside `mlflow run`, which made the run for this entry point
            run_id = mlflow.start_run().info.run_id
            mlflow.set_tags(run_tags)
            hooks.started(run_id)
        else:  # a run id, or a run the run log creates while the model trains (runlog.activate when needed)
            run_id = runlog.start_run(exp_id, run_name or family, nested=nested, tags=run_tags, created=hooks.started)
        recorder.run_id = run_id
        status = "FAILED"
        try:
            keep = (lambda m: hooks.keep_model(m) and (log_model(m) if callable(log_model) else bool(log_model)))
            fit = _Fit(use_case, dataset, family, model_family, merged, seed, runlog, hooks)
            result = _fit_and_log(fit, train_part, valid_part, recorder, keep, log_dataset)
            result.seconds = time.perf_counter() - started
            interrupts.check()  # a Ctrl-C dropped on the way (a finalizer took it) stops this run, not the next
            status = "FINISHED"
            return result
        except Pruned:
            runlog.log(run_id, tags={TAG_PRUNED: "true"})
            if len(recorder.history) > 1:
                runlog.activate(run_id)
                mlflow.log_figure(curve_figure(recorder.history, use_case.metric), "plots/validation_curve.png")
            status = "KILLED"  # MLflow's word for a run stopped on purpose; the tag says why
            raise
        except KeyboardInterrupt:
            status = "KILLED"  # stopped by the user (Ctrl-C), not failed
            raise
        finally:
            # Close what this training drew; never import here: an import that Ctrl-C cut short fails again,
            # and an error raised in a finally block replaces the KeyboardInterrupt that is on its way out.
            plt = sys.modules.get("matplotlib.pyplot")
            if plt is not None:
                plt.close("all")
            runlog.end_run(run_id, status)


def dataset_description(dataset: Dataset) -> dict[str, Any]:
    """What ``data/dataset.json`` holds: the fingerprint, the source files and the cleaning report."""
    return {"fingerprint": dataset.fingerprint, "sources": list(dataset.sources), "cleaning": dict(dataset.report)}


def _described_columns(use_case, dataset: Dataset) -> dict:
    """The target's name and the use-case file's readable column labels and units, for explanations."""
    declared = getattr(getattr(use_case, "spec", None), "columns", None) or getattr(use_case, "columns", None)
    return {"target": dataset.target, **({"columns": dict(declared)} if declared else {})}


@dataclass(frozen=True)
class _Fit:
    """One fit's fixed parts: what is fitted, with which parameters and seed, and where it is logged."""

    use_case: UseCase
    dataset: Dataset
    family: str
    model_family: Any
    merged: dict
    seed: int
    runlog: RunLog
    hooks: TrainingHooks


def _fit_and_log(fit: _Fit, train_part, valid_part, recorder, log_model, log_dataset: bool) -> TrainingResult:
    use_case, dataset, family, model_family, merged = fit.use_case, fit.dataset, fit.family, fit.model_family, \
        fit.merged
    seed, runlog, hooks = fit.seed, fit.runlog, fit.hooks
    started = time.perf_counter()
    run_id = recorder.run_id
    runlog.log(run_id, params={"family": family, "seed": seed, **merged, "data_rows": len(dataset),
                               "train_rows": len(train_part), "valid_rows": len(valid_part)})
    fitted = model_family.fit(train_part, valid_part, {"seed": seed, **merged}, recorder)
    run_id = runlog.activate(run_id)  # figures and the model go through the active run
    extra = {k: float(v) for k, v in hooks.fitted(fitted, valid_part).items()}
    predictions = fitted.predict(valid_part.X)
    labels = sorted(dataset.y.unique()) if use_case.task == "classification" else None
    metrics = evaluate(use_case.task, valid_part.y, predictions, labels, extra=(use_case.metric,))
    # a regressor's prediction interval: split-conformal on the validation rows, which the fit did not use
    interval = conformal(valid_part.y, predictions) if use_case.task == "regression" else None
    metrics["fit_seconds"] = time.perf_counter() - started
    size = fitted.size_bytes()
    if size is not None:
        metrics["model_size_bytes"] = float(size)
    metrics.update(extra)
    runlog.log(run_id, metrics=metrics, tags={TAG_PRUNED: "false"})  # one store round trip for both
    if use_case.task == "classification":
        mlflow.log_figure(confusion_matrix_figure(valid_part.y, predictions, labels, f"{use_case.name} / {family}"),
                          "plots/confusion_matrix.png")
    if len(recorder.history) > 1:  # a curve needs more than one point
        mlflow.log_figure(curve_figure(recorder.history, use_case.metric), "plots/validation_curve.png")
    model_uri = None
    if log_model(metrics):
        metadata = {"use_case": use_case.name, "task": use_case.task, "family": family,
                    "data_fingerprint": dataset.fingerprint, "categories": use_case.category_values(dataset),
                    **use_case.input_checks(dataset)}
        if labels is not None:
            metadata["labels"] = [str(x) for x in labels]
        if interval is not None:
            metadata[CONFORMAL] = interval.to_dict()
        metadata.update(_described_columns(use_case, dataset))
        model_uri = fitted.log_model("model", dataset.X.head(3), metadata)
        log_background(model_uri, train_part.X, seed, tracking_uri=runlog.client.tracking_uri)
        runlog.log(run_id, tags={TAG_MODEL_URI: model_uri})
    if log_dataset or model_uri:  # a registered model's card and lineage read it from its source run
        runlog.log_dict(run_id, dataset_description(dataset), "data/dataset.json")
    return TrainingResult(run_id, family, dict(merged), metrics, model_uri, False, recorder.history)
