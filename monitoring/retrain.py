"""Retraining as a loop: the champion's own sources plus the served traffic that has been labelled since.

``retrain(name, dataset)`` is what ``civicml retrain NAME`` runs::

    from monitoring.retrain import RetrainOptions, champion_of, retrain
    champion, use_case = champion_of("service-requests-router")
    outcome = retrain("service-requests-router", dataset, RetrainOptions(window="7d", n_trials=10))
    outcome.version     # the challenger it registered

1. **The traffic.** The answers of ``name`` recorded in the monitoring store (:mod:`monitoring.records`:
   stored already masked, by the same rules as training data) that have an outcome
   (:mod:`monitoring.feedback`), answered in the most recent ``window``: the window ends at the newest
   labelled answer (a store fed a simulated season has its own clock). Their masked inputs become the use
   case's feature columns and their outcomes its target. A labelled answer that lacks a feature column is
   left out and counted.
2. **Judged, never trained on.** A fixed share of answers (:data:`JUDGING_SHARE`, chosen by a hash of the
   whole answer id, so every process and replica agrees, and the rows of one request are spread) is kept
   for judging: the promotion gate on the most recent labelled window (``recent_window:`` in a policy,
   :class:`registry.gates.RecentWindow`) evaluates on those rows only, and retraining never trains on them.
   A challenger is then never judged on answers it learnt.
3. **The training set** is the use case's sources (the ``dataset`` given: what ``civicml train``/``tune``
   integrate) with the traffic rows appended, fingerprinted as one :class:`projects.Dataset`.
4. **Warm start.** The new study's first trials are enqueued before it runs: the champion's own trial (its
   study and trial tags; for a champion trained outside a study, its run's parameters), then the best
   complete trials of the champion's study, then the use case's baselines, each only if the new study's
   search space holds it. They carry the Optuna user attribute ``civicml.warm_start``.
5. **The challenger** is registered (alias ``challenger``) with lineage tags naming both parents: the
   champion version it started from and the study that warm-started it, and the traffic (rows, window,
   fingerprint) it learnt from (:mod:`civicml.tags`).

Nothing is stored when the arguments or the traffic are wrong (no champion, no labelled answer in the
window): those are one :class:`~civicml.errors.InvalidInput` line before any study is made.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence, TextIO

import pandas as pd

from civicml.errors import Failed, InvalidInput, NotFound
from civicml.fingerprint import frame_fingerprint
from civicml.settings import Settings
from civicml.tags import (ATTR_BASELINE, ATTR_WARM_START, TAG_FAMILY, TAG_RETRAINED_FROM, TAG_STUDY,
                          TAG_TRAFFIC_FINGERPRINT, TAG_TRAFFIC_ROWS, TAG_TRAFFIC_WINDOW, TAG_TRIAL, TAG_USE_CASE,
                          TAG_WARM_START_STUDY)
from monitoring.quality import parse_window
from monitoring.records import RecordStore, open_store

JUDGING_SHARE = 0.25  # of labelled answers, kept for the recent-window gate and never trained on


def judged(answer_id: str) -> bool:
    """Whether an answer is kept for judging (the recent-window gate), never for training."""
    digest = hashlib.sha256(str(answer_id).encode()).hexdigest()
    return int(digest[:8], 16) / 0x1_0000_0000 < JUDGING_SHARE


# -- labelled traffic ----------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelledTraffic:
    """Labelled served answers of one model as rows of its use case: the feature columns and the target."""

    frame: pd.DataFrame
    target: str
    window: str
    since: float | None = None  # epoch seconds, the window's start (exclusive)
    until: float | None = None  # the newest labelled answer's time (inclusive)
    skipped: int = 0  # labelled answers in the window lacking a feature column

    @property
    def rows(self) -> int:
        return len(self.frame)

    @property
    def fingerprint(self) -> str:
        return frame_fingerprint(self.frame) if len(self.frame) else ""

    @property
    def label(self) -> str:
        """``7d: 2026-07-27T10:00Z to 2026-08-03T10:00Z`` (UTC), or the window alone when it is empty."""
        if self.until is None:
            return f"{self.window}: no labelled answer"
        from monitoring.quality import window_label

        first = self.frame.attrs.get("first_time", self.since)
        return f"{self.window}: {window_label(first)} to {window_label(self.until)}"

    def describe(self) -> dict[str, Any]:
        return {"rows": self.rows, "window": self.window, "span": self.label, "fingerprint": self.fingerprint,
                "skipped": self.skipped}


def labelled_traffic(store: RecordStore, model: str, features: Sequence[str], target: str, window: str = "7d", *,
                     judging: bool = False, dtypes: dict | None = None) -> LabelledTraffic:
    """The labelled answers of ``model`` in the most recent ``window`` (ending at the newest labelled
    answer): the training share (``judging=False``) or the share kept for judging (``judging=True``).
    ``dtypes``: the column types to give the rows (a training set's), where they convert."""
    seconds = parse_window(window)
    records = store.read(model=model)
    labelled = records[records["outcome"].notna()]
    if labelled.empty:
        return LabelledTraffic(pd.DataFrame(columns=[*features, target]), target, window)
    until = float(labelled["time"].max())
    since = until - seconds
    recent = labelled[(labelled["time"] > since) & (labelled["answer_id"].map(judged) == judging)]
    inputs = pd.DataFrame.from_records(list(recent["inputs"]), index=recent.index)
    for column in features:
        if column not in inputs.columns:
            inputs[column] = None
    complete = inputs[list(features)].notna().all(axis=1)
    frame = inputs.loc[complete, list(features)].assign(**{target: recent.loc[complete, "outcome"]})
    frame = _typed(frame.reset_index(drop=True), dtypes or {})
    frame.attrs["first_time"] = float(recent["time"].min()) if len(recent) else since
    return LabelledTraffic(frame, target, window, since, until, int((~complete).sum()))


def _typed(frame: pd.DataFrame, dtypes: dict) -> pd.DataFrame:
    for column, dtype in dtypes.items():
        if column in frame.columns:
            try:
                frame[column] = frame[column].astype(dtype)
            except (TypeError, ValueError):
                raise InvalidInput(f"labelled traffic: column '{column}' does not convert to the training set's "
                                   f"type {dtype}") from None
    return frame


def recent_window_frame(store: RecordStore, model: str, use_case, window: str) -> LabelledTraffic:
    """The judging share of ``model``'s most recent labelled ``window``: what ``civicml promote`` hands the
    recent-window gate (:class:`registry.PromoteOptions` ``recent``)."""
    features, target = _columns(use_case)
    return labelled_traffic(store, model, features, target, window, judging=True)


def _columns(use_case) -> tuple[tuple[str, ...], str]:
    """The use case's feature columns and target, from its declaration (a use-case file) or its module."""
    spec = getattr(use_case, "spec", None)
    if spec is not None and getattr(spec, "features", None) and getattr(spec, "target", None):
        return tuple(spec.features), str(spec.target)
    if getattr(use_case, "name", None) == "service_requests":
        from projects.service_requests import FEATURES

        return tuple(FEATURES), "department"
    raise InvalidInput(f"use case '{getattr(use_case, 'name', use_case)}' declares no feature columns and "
                       f"target that served answers could be read as")


# -- the training set ------------------------------------------------------------------------------
def with_traffic(dataset, traffic: LabelledTraffic, model: str):
    """``dataset`` (the use case's sources) with the traffic's rows appended, as one Dataset."""
    from projects import Dataset

    rows = traffic.frame.astype({c: dataset.frame[c].dtype for c in traffic.frame.columns
                                 if c in dataset.frame.columns}, errors="ignore")
    frame = pd.concat([dataset.frame, rows], ignore_index=True)
    source = f"served answers of {model} ({traffic.rows} labelled, {traffic.label}, " \
             f"fingerprint {traffic.fingerprint[:12]})"
    report = {**dict(dataset.report), "served_traffic": traffic.describe()}
    return Dataset.build(dataset.use_case, frame, dataset.target, dataset.features, (*dataset.sources, source),
                         report)


# -- the champion and the warm start ---------------------------------------------------------------
def champion_of(name: str, settings: Settings | None = None):
    """(the champion version of ``name``, the use case it was trained for)."""
    from projects import get_use_case
    from registry import CHAMPION, version_of

    settings = settings or Settings.from_env()
    try:
        champion = version_of(name, CHAMPION, settings=settings)
    except NotFound:
        raise InvalidInput(f"model '{name}' has no champion: a retraining starts from the version that serves "
                           f"(civicml promote {name} first)") from None
    tag = champion.tags.get(TAG_USE_CASE)
    if not tag:
        raise InvalidInput(f"'{name}' champion v{champion.version} records no use case (tag {TAG_USE_CASE}): "
                           f"nothing says which sources to retrain on")
    return champion, get_use_case(tag)


@dataclass(frozen=True)
class WarmTrial:
    """One trial enqueued first in the new study: its parameters (as Optuna names them) and where from."""

    params: dict[str, Any]
    origin: str  # "champion v3 (study S, trial 5)", "study S trial 7", "baseline"


def warm_trials(champion, plan, use_case, settings: Settings, limit: int = 3) -> list[WarmTrial]:
    """The trials the new study starts with (see the module's docstring), those ``plan``'s spaces hold."""
    found: list[WarmTrial] = []
    study = _champion_study(champion, plan.storage)
    own = champion.tags.get(TAG_TRIAL)
    if study is not None:
        complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
        maximize = study.directions[0].name == "MAXIMIZE"
        ranked = sorted(complete, key=lambda t: (str(t.number) != own, -t.values[0] if maximize else t.values[0]))
        for trial in ranked[:limit + 1]:  # the champion's own trial first, then the study's best
            mine = f" (champion v{champion.version})" if str(trial.number) == own else ""
            found.append(WarmTrial(dict(trial.params), f"study {study.study_name} trial {trial.number}{mine}"))
    else:
        found.append(WarmTrial(_run_params(champion, settings), f"champion v{champion.version}: its run's parameters"))
    for family, params in dict(getattr(use_case, "baseline_trials", None) or {}).items():
        found.append(WarmTrial({f"{family}.{k}": v for k, v in params.items()}, "baseline"))
    return _fitting(found, plan)


def _champion_study(champion, storage: str):
    import optuna

    name = champion.tags.get(TAG_STUDY)
    if not name:
        return None
    try:
        return optuna.load_study(study_name=name, storage=_optuna_storage(storage))
    except KeyError:  # not in this storage (another team's, or removed)
        return None


def _run_params(champion, settings: Settings) -> dict[str, Any]:
    """A champion trained outside a study: its run's logged parameters, named as a trial names them."""
    import yaml

    from registry import lineage

    family = champion.tags.get(TAG_FAMILY)
    params = lineage(champion.name, champion.version, settings=settings).get("run_params") or {}
    out: dict[str, Any] = {"family": family} if family else {}
    for key, text in params.items():
        try:
            out[f"{family}.{key}"] = yaml.safe_load(text)
        except yaml.YAMLError:
            continue
    return out


def _fitting(found: list[WarmTrial], plan) -> list[WarmTrial]:
    """The trials whose family is searched and whose every value the (overridden) space holds, once each."""
    from projects.space import Categorical, Int, check_value

    out, seen = [], set()
    for trial in found:
        names = {k.split(".", 1)[0] for k in trial.params if "." in k}
        family = trial.params.get("family") or (names.pop() if len(names) == 1 else None)
        space = plan.spaces.get(family)
        if space is None:
            continue
        values = {k.split(".", 1)[1]: v for k, v in trial.params.items() if k.startswith(f"{family}.")}
        if set(values) != set(space):
            continue
        try:
            values = {k: check_value(k, space[k], v) for k, v in values.items()}
        except InvalidInput:
            continue
        if not all(isinstance(p, Categorical) or p.low <= values[k] <= p.high for k, p in space.items()):
            continue
        if not all(not isinstance(p, Int) or (values[k] - p.low) % p.step == 0 for k, p in space.items()):
            continue
        fixed = {f"{family}.{k}": v for k, v in values.items()}
        if len(plan.families) > 1:
            fixed["family"] = family
        key = tuple(sorted(fixed.items(), key=str))
        if key not in seen:
            seen.add(key)
            out.append(WarmTrial(fixed, trial.origin))
    return out


def _optuna_storage(uri: str):
    """What Optuna opens for ``uri`` (a journal file is a path; RDB storages are their URL)."""
    from tuning import storage_kind

    if storage_kind(uri) != "journal":
        return uri
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    rest = uri[len("journal:"):]
    path = Path(rest[2:] if rest.startswith("//") else rest)
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def enqueue_warm_start(plan, trials: list[WarmTrial], settings: Settings) -> bool:
    """Create the new study and enqueue ``trials`` first; False (nothing enqueued) when the study already
    has trials (a retraining run again resumes its study, as ``tune`` does)."""
    import optuna

    if plan.storage.startswith("sqlite:///"):
        settings.ensure_home()
        Path(plan.storage[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=plan.study_name, storage=_optuna_storage(plan.storage),
                                load_if_exists=True, directions=[o.direction for o in plan.objectives])
    if study.get_trials(deepcopy=False):
        return False
    for trial in trials:
        attrs = {ATTR_BASELINE: True} if trial.origin == "baseline" else {ATTR_WARM_START: trial.origin}
        study.enqueue_trial(trial.params, user_attrs=attrs)
    return True


# -- retrain ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RetrainOptions:
    """``window``: the labelled traffic's window (``7d``: ending at the newest labelled answer); ``n_trials``
    (the warm-start trials first); ``warm_trials``: how many of the champion study's best trials besides the
    champion's own; ``holdout``: register with the promotion held-out set's card, rules and charts (as
    ``civicml tune`` does); ``store_url``: the record store (default: SQLite under the home)."""

    window: str = "7d"
    n_trials: int = 5
    warm_trials: int = 3
    families: Sequence[str] | None = None
    overrides: Mapping[str, Mapping] | None = None  # search-space overrides, as TuneOptions takes them
    study_name: str | None = None
    seed: int = 0
    store_url: str | None = None
    holdout: bool = True


@dataclass
class RetrainOutcome:
    name: str
    version: str  # the challenger registered
    champion: str  # the champion version it started from
    study: Any  # tuning.StudyResult
    traffic: dict[str, Any]
    source_rows: int
    warm_start: list[str] = field(default_factory=list)
    warm_study: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "alias": "challenger", "retrained_from": self.champion,
                "warm_start_study": self.warm_study, "warm_start": self.warm_start, "traffic": self.traffic,
                "source_rows": self.source_rows, "study": self.study.to_dict()}

    def text(self) -> str:
        s, t = self.study, self.traffic
        value = "-" if s.best_value is None else f"{s.best_value:.4f}"
        warm = f"warm-started with {len(self.warm_start)} ({'; '.join(self.warm_start)})" if self.warm_start else \
            "no warm start this time (a resumed study, or no earlier trial its search space holds)"
        return (f"retrained {self.name} from champion v{self.champion} on {self.source_rows} source rows + "
                f"{t['rows']} labelled served answers ({t['span']}, fingerprint {t['fingerprint'][:12]})\n"
                f"study {s.study_name}: {s.n_complete} complete of {s.n_trials} trials, {warm}; chosen trial "
                f"{s.best_trial}: {value}\nregistered {self.name} version {self.version} as 'challenger'")


def check_retrain(name: str, options: RetrainOptions, settings: Settings):
    """(the champion, its use case) once the arguments, the caller's right to tune and the labelled traffic are
    checked; raises before any data is generated or anything is stored."""
    from tuning import TuneOptions, plan_study

    champion, use_case = champion_of(name, settings)
    if options.warm_trials < 0:
        raise InvalidInput(f"warm_trials must be at least 0, got {options.warm_trials}")
    plan_study(use_case, TuneOptions(n_trials=options.n_trials, families=options.families, seed=options.seed,
                                     overrides=options.overrides, study_name=options.study_name), settings=settings)
    features, target = _columns(use_case)
    store = open_store(options.store_url, settings)
    try:
        traffic = labelled_traffic(store, name, features, target, options.window)
    finally:
        store.close()
    _refuse_empty(name, traffic, options.window)
    return champion, use_case


def _refuse_empty(name: str, traffic: LabelledTraffic, window: str) -> None:
    if not traffic.rows:
        raise InvalidInput(f"no labelled served answers of '{name}' to retrain on in the most recent {window} "
                           f"window (record with civicml serve --record, label with civicml feedback)"
                           + (f"; {traffic.skipped} lacked a feature column" if traffic.skipped else ""))


def retrain(name: str, dataset, options: RetrainOptions | None = None, *, settings: Settings | None = None,
            progress: bool | TextIO = False) -> RetrainOutcome:
    """Retrain ``name``'s champion on ``dataset`` (its use case's sources) plus its labelled served traffic;
    register the result as ``challenger``. See the module's docstring."""
    from tuning import TuneOptions, plan_study, tune

    options = options or RetrainOptions()
    settings = settings or Settings.from_env()
    champion, use_case = check_retrain(name, options, settings)
    if dataset.use_case != use_case.name:
        raise InvalidInput(f"the data given is of use case '{dataset.use_case}', the champion of '{name}' of "
                           f"'{use_case.name}'")
    traffic = training_traffic(name, dataset, options, settings)
    study_name = options.study_name or f"{use_case.name}-retrain-v{champion.version}-{traffic.fingerprint[:8]}"
    tuning = TuneOptions(n_trials=options.n_trials, families=options.families, study_name=study_name,
                         seed=options.seed, overrides=options.overrides)
    plan = plan_study(use_case, tuning, settings=settings)  # who may tune, and every argument, checked first
    _say(progress, f"{traffic.rows} labelled answers of {name} ({traffic.label}) join {len(dataset)} source rows")
    combined = with_traffic(dataset, traffic, name)
    warm = warm_trials(champion, plan, use_case, settings, options.warm_trials)
    enqueued = enqueue_warm_start(plan, warm, settings)
    result = tune(use_case, combined, tuning, settings=settings, progress=progress)
    if not result.best_model_uri:
        raise Failed(f"study {result.study_name} handed on no model to register")
    _say(progress, f"registering trial {result.best_trial} of {result.study_name} as {name}'s challenger")
    version = _register(name, result, champion, traffic, use_case, settings, options.holdout)
    return RetrainOutcome(name, version.version, champion.version, result, traffic.describe(), len(dataset),
                          [w.origin for w in warm] if enqueued else [], champion.tags.get(TAG_STUDY))


def training_traffic(name: str, dataset, options: RetrainOptions, settings: Settings) -> LabelledTraffic:
    """The training share of ``name``'s labelled traffic in ``options.window``; refused when empty."""
    store = open_store(options.store_url, settings)
    try:
        dtypes = {c: dataset.frame[c].dtype for c in (*dataset.features, dataset.target)}
        traffic = labelled_traffic(store, name, dataset.features, dataset.target, options.window, dtypes=dtypes)
    finally:
        store.close()
    _refuse_empty(name, traffic, options.window)
    return traffic


def _register(name: str, result, champion, traffic: LabelledTraffic, use_case, settings: Settings, holdout: bool):
    from registry import register, registration_holdout

    held = registration_holdout(result.best_model_uri, settings)[1] if holdout else None
    tags = {TAG_STUDY: result.study_name, TAG_TRIAL: str(result.best_trial),
            **getattr(use_case, "registry_tags", {}),
            TAG_RETRAINED_FROM: str(champion.version), TAG_TRAFFIC_ROWS: str(traffic.rows),
            TAG_TRAFFIC_WINDOW: traffic.label, TAG_TRAFFIC_FINGERPRINT: traffic.fingerprint}
    if champion.tags.get(TAG_STUDY):
        tags[TAG_WARM_START_STUDY] = champion.tags[TAG_STUDY]
    return register(result.best_model_uri, name, settings=settings, tags=tags,
                    holdout=None if held is None else held.frame, target=None if held is None else held.target)


def _say(progress: bool | TextIO, text: str) -> None:
    if progress:
        stream = sys.stderr if progress is True else progress
        stream.write(f"retrain: {text}\n")
        stream.flush()


__all__ = ["JUDGING_SHARE", "LabelledTraffic", "RetrainOptions", "RetrainOutcome", "WarmTrial", "champion_of",
           "check_retrain", "enqueue_warm_start", "judged", "labelled_traffic", "recent_window_frame", "retrain", "training_traffic",
           "warm_trials", "with_traffic"]
