"""The generic tabular use case: a city problem described by a use-case file (``projects.spec``), no code.

::

    from projects import get_use_case
    uc = get_use_case("inspections/usecase.yaml")
    ds = uc.integrate(uc.generate_sources(None, 0, 0))   # the files the use-case file names
    held_out = uc.holdout(None)                           # rows no trial sees (split rule or file)

``generate_sources`` makes nothing up: it returns the department files the
use-case file names. ``integrate`` of exactly those files leaves out the
held-out rows of a split rule; ``integrate`` of other files (a held-out export,
``civicml promote --holdout``) puts them in place of the sources, in order, and
keeps every row.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from contextvars import ContextVar
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from civicml.errors import InvalidInput, NotFound
from civicml.tags import TAG_USE_CASE, TAG_USE_CASE_SHA256
from projects.base import Dataset, UseCase
from projects.spec import UseCaseSpec, did_you_mean, load_spec
from projects.tabular.integrate import integrate as integrate_frame
from projects.tabular.integrate import model_inputs, source_files


_HOME: ContextVar[Path | None] = ContextVar("civicml_use_case_home", default=None)


@contextlib.contextmanager
def use_case_home(home: str | Path | None):
    """Within the block, use-case files keep their salt and inline policy under ``home`` (a command's
    ``--home``); ``None`` leaves them under the environment's home."""
    token = _HOME.set(Path(home).resolve() if home else None)
    try:
        yield
    finally:
        _HOME.reset(token)


class TabularUseCase(UseCase):
    """A use case read from a use-case file. ``home`` is the CivicML home that keeps its hashing salt and
    its inline policy: the one given, else the one of :func:`use_case_home`, else the environment's
    (``CIVICML_HOME``)."""

    def __init__(self, spec: UseCaseSpec, home: str | Path | None = None):
        self.spec = spec
        self._home = Path(home) if home is not None else None
        self.name = spec.name
        self.task = "regression" if spec.task == "forecasting" else spec.task
        self.metric = spec.metric
        self.direction = spec.direction
        self.registered_model = spec.registered_model
        self.description = spec.description or f"{spec.task.capitalize()} of '{spec.target}' (use-case file " \
                                               f"{spec.path.name})."
        self._cache: dict = {}
        self._spaces = self._search_spaces()  # checks the file's overrides before any data is read

    @classmethod
    def from_file(cls, path: str | Path, home: str | Path | None = None) -> "TabularUseCase":
        return cls(load_spec(path), home)

    @property
    def home(self) -> Path:
        if self._home is not None:
            return self._home
        if _HOME.get() is not None:
            return _HOME.get()
        from civicml.settings import Settings

        return Settings.from_env().home

    def hash_salt(self) -> str:
        """The home's secret salt of hashed columns (``projects.tabular.secret``), made on first use."""
        from projects.tabular.secret import home_salt

        return home_salt(self.home)

    # -- what tuning and the registry read -------------------------------------------------
    @property
    def registry_tags(self) -> dict[str, str]:
        """Version tags that let a promotion find this use case again: the file's path and digest."""
        return {TAG_USE_CASE: str(self.spec.path), TAG_USE_CASE_SHA256: self.spec.sha256}

    @cached_property
    def families(self):
        from projects.tabular.families import FAMILIES

        _, types, _ = self._declared()
        types = {c: "numeric" if t == "year" else t for c, t in types.items()}  # a year is a number to a model
        out = {}
        for name in self.spec.families:
            out[name] = FAMILIES[name](self.task, types, self.metric)
            out[name].space = self._spaces[name]
        return out

    @property
    def baseline_trials(self) -> dict[str, dict]:
        """The first trial of a new study (``tuning`` enqueues it): histogram gradient boosting with
        scikit-learn's default settings, so the search always holds the plain baseline it must beat."""
        from projects.tabular.families import HistGradientBoosting

        if HistGradientBoosting.name not in self.spec.families:
            return {}
        return {HistGradientBoosting.name: dict(HistGradientBoosting.defaults)}

    def _search_spaces(self) -> dict:
        """Each family's search space after the file's ``search`` overrides (the grammar of ``--set``)."""
        from projects.tabular.families import FAMILIES

        spaces = {name: dict(FAMILIES[name].space) for name in self.spec.families if name in FAMILIES}
        if self.spec.search:
            from projects.space import parse_assignment

            for text in self.spec.search:
                try:
                    family, param, value = parse_assignment(text, spaces)
                except InvalidInput as err:
                    raise InvalidInput(f"use-case file {self.spec.path}: field 'search': "
                                       f"{str(err).removeprefix('--set ')}") from None
                spaces[family][param] = value
        return spaces

    @property
    def policy_file(self) -> Path | None:
        policy = self.spec.policy
        if isinstance(policy, str):
            path = self.spec.resolve(policy)
            if not path.exists():
                raise NotFound(f"use-case file {self.spec.path}: field 'policy': file not found: {policy}")
            return path
        from projects.tabular.default_policy import default_policy

        data = {"version": 1, "model": self.registered_model, **default_policy(self.task, self.metric)}
        data.update(policy or {})
        text = yaml.safe_dump(data, sort_keys=False)
        digest = hashlib.sha256(f"{self.spec.path}\n{text}".encode()).hexdigest()[:16]
        path = self.home / "policies" / f"{self.name}-{digest}.yaml"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            part = path.with_name(f".{path.name}.{uuid.uuid4().hex}")  # one per writer: rename is atomic
            part.write_text(f"# promotion policy of {self.registered_model}, from {self.spec.path}\n{text}")
            part.replace(path)
        return path

    def category_values(self, dataset: Dataset) -> dict[str, list]:
        return {}  # unknown categories are one-hot encoded as "infrequent", not refused

    def input_checks(self, dataset: Dataset) -> dict:
        """The base's observed ranges, the file's ``inputs.out_of_range``, and the yes/no columns (which serving
        reads in any spelling of ``civicml.booleans``, as ``model_inputs`` read the file)."""
        _, types, _ = self._declared()
        booleans = [c for c in dataset.features if types.get(c) == "boolean"]
        return {**super().input_checks(dataset), "out_of_range": self.spec.out_of_range, "booleans": booleans}

    # -- data ---------------------------------------------------------------------------------
    def declared_files(self) -> list[list[Path]]:
        return [source_files(self.spec, s) for s in self.spec.sources]

    def generate_sources(self, folder, n=0, seed=0) -> list[Path]:
        """The department files the use-case file names (nothing is generated)."""
        return [p for files in self.declared_files() for p in files]

    def _frame(self, files: list[list[Path]]):
        key = tuple(tuple(str(p) for p in f) for f in files)
        if key not in self._cache:
            frame, types, report = integrate_frame(self.spec, files, self.hash_salt)
            features = self._features(frame, types)
            if self.spec.task == "forecasting":
                frame, features, types = self._lagged(frame, features, types, report)
            inputs = model_inputs(frame, features, types)
            out = pd.concat([inputs, frame[[self.spec.target]]], axis=1)
            keep = [c for c in frame.columns if c not in out.columns]
            out = pd.concat([out, frame[keep]], axis=1)
            report["features"] = {c: types[c] for c in features}
            # the use-case file travels with every run that describes its data (data/dataset.json)
            report["use_case_file"] = {"path": str(self.spec.path), "sha256": self.spec.sha256,
                                       "text": self.spec.path.read_text()}
            self._cache[key] = (out, types, features, report)
        return self._cache[key]

    def _declared(self):
        frame, types, features, report = self._frame(self.declared_files())
        return frame, types, features

    def _features(self, frame: pd.DataFrame, types: dict[str, str]) -> list[str]:
        spec = self.spec
        if spec.features is not None:
            for c in spec.features:
                if c not in frame.columns:
                    raise InvalidInput(f"{spec.name}: field 'features': no column '{c}'"
                                       f"{did_you_mean(c, frame.columns)}")
            if spec.target in spec.features:
                raise InvalidInput(f"{spec.name}: field 'features': the target '{spec.target}' cannot be a feature")
            return list(spec.features)
        for c in spec.exclude:
            if c not in frame.columns and c not in spec.privacy.drop:
                raise InvalidInput(f"{spec.name}: field 'features.all_but': no column '{c}'"
                                   f"{did_you_mean(c, frame.columns)}")
        out = [c for c in frame.columns if c != spec.target and c not in spec.exclude and types.get(c) != "id"]
        if not out:
            raise InvalidInput(f"{spec.name}: no feature columns left besides the target")
        return out

    def _lagged(self, frame, features, types, report):
        f = self.spec.forecast
        if f.time not in frame.columns or types.get(f.time) != "date":
            raise InvalidInput(f"{self.name}: field 'forecast.time': '{f.time}' must be a date column")
        order = [f.group, f.time] if f.group else [f.time]
        frame = frame.sort_values(order, kind="stable").reset_index(drop=True)
        series = frame.groupby(f.group)[self.spec.target] if f.group else frame[self.spec.target]
        lag_columns = []
        for k in f.lags:
            name = f"{self.spec.target}_lag{f.horizon + k - 1}"
            frame[name] = series.shift(f.horizon + k - 1)
            types[name] = "numeric"
            lag_columns.append(name)
        before = len(frame)
        frame = frame.dropna(subset=lag_columns).reset_index(drop=True)
        report["forecast"] = {"horizon": f.horizon, "lags": lag_columns, "rows_without_history": before - len(frame)}
        return frame, features + [c for c in lag_columns if c not in features], types

    def _is_declared(self, sources) -> bool:
        return sorted(str(Path(p).resolve()) for p in sources) == \
            sorted(str(p.resolve()) for files in self.declared_files() for p in files)

    def integrate(self, sources: list[Path]) -> Dataset:
        sources = [Path(p) for p in sources]
        if self._is_declared(sources):
            frame, types, features, report = self._frame(self.declared_files())
            train_index, held_index = self._holdout_split(frame)
            report = {**report, "holdout": self._holdout_text(len(held_index))}
            part = frame.iloc[train_index]
            report["training_rows"] = len(part)
            return Dataset.build(self.name, part, self.spec.target, features, sources, report)
        return self._replaced(sources)

    def _replaced(self, sources: list[Path]) -> Dataset:
        declared = self.declared_files()
        if len(sources) > len(declared):
            raise InvalidInput(f"{self.name}: {len(sources)} files given, but the use case has "
                               f"{len(declared)} sources; give them in the order of 'sources'")
        for p in sources:
            if not p.exists():
                raise NotFound(f"source file not found: {p}")
        files = [[p] for p in sources] + declared[len(sources):]
        frame, types, features, report = self._frame(files)
        _, declared_types, declared_features = self._declared()
        missing = [c for c in declared_features if c not in frame.columns]
        if missing:
            raise InvalidInput(f"{self.name}: {sources[0].name} lacks the feature column '{missing[0]}'")
        return Dataset.build(self.name, frame, self.spec.target, declared_features, sources, report)

    def _holdout_split(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        h = self.spec.holdout
        n = len(frame)
        if h.file is not None:
            return np.arange(n), np.arange(0)
        if h.split == "random":
            rng = np.random.default_rng(h.seed)
            held = np.sort(rng.permutation(n)[: max(1, int(round(n * h.fraction)))])
        elif h.split == "time":
            if h.column not in frame.columns:
                raise InvalidInput(f"{self.name}: field 'holdout.column': no column '{h.column}'"
                                   f"{did_you_mean(h.column, frame.columns)}")
            held = _last_rows_by_time(frame[h.column], h.fraction, f"{self.name}: holdout split by time")
        else:  # group
            if h.column not in frame.columns:
                raise InvalidInput(f"{self.name}: field 'holdout.column': no column '{h.column}'"
                                   f"{did_you_mean(h.column, frame.columns)}")
            groups = frame[h.column].astype(str)
            unique = np.sort(groups.unique())
            rng = np.random.default_rng(h.seed)
            chosen = set(rng.permutation(unique)[: max(1, int(round(len(unique) * h.fraction)))])
            held = np.flatnonzero(groups.isin(chosen).to_numpy())
        train = np.setdiff1d(np.arange(n), held)
        if len(train) < 10 or len(held) < 5:
            raise InvalidInput(f"{self.name}: the held-out rule leaves {len(train)} training and {len(held)} "
                               f"held-out rows; need at least 10 and 5")
        if self.task == "classification" and frame[self.spec.target].iloc[train].nunique() < 2:
            raise InvalidInput(f"{self.name}: target '{self.spec.target}' has one class in the training rows")
        return train, held

    def _holdout_text(self, rows: int) -> str:
        h = self.spec.holdout
        if h.file:
            return f"file {h.file}"
        rule = {"random": f"random {h.fraction:g} (seed {h.seed})", "time": f"last {h.fraction:.0%} of rows by "
                f"{h.column}", "group": f"{h.fraction:g} of the groups of {h.column} (seed {h.seed})"}[h.split]
        return f"{rule}: {rows} rows"

    def holdout(self, folder=None, seed: int = 10_000, n: int | None = None) -> Dataset:
        """Rows that no trial saw: the declared held-out file, or the split rule's part of the sources."""
        h = self.spec.holdout
        if h.file is not None:
            return self._replaced([self.spec.resolve(h.file)])
        frame, types, features, report = self._frame(self.declared_files())
        _, held = self._holdout_split(frame)
        sources = self.generate_sources(None)
        return Dataset.build(self.name, frame.iloc[held], self.spec.target, features, sources,
                             {"holdout": self._holdout_text(len(held))})

    def split(self, dataset: Dataset, seed: int = 0, valid_fraction: float = 0.25):
        if self.task == "classification" and dataset.y.value_counts().min() < 2:
            from sklearn.model_selection import train_test_split

            idx = np.arange(len(dataset))
            a, b = train_test_split(idx, test_size=valid_fraction, random_state=seed)
            return dataset.subset(np.sort(a)), dataset.subset(np.sort(b))
        return super().split(dataset, seed, valid_fraction)


def _last_rows_by_time(column: pd.Series, fraction: float, where: str) -> np.ndarray:
    """Positions of the last ``fraction`` of the rows in time order, cut between two distinct times (rows of one
    time, e.g. one year, stay on one side): the cut whose held-out share of rows is nearest ``fraction``.
    ``column`` holds dates or numbers (a bare year); rows without a time stay in training."""
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        when = pd.to_numeric(column, errors="coerce").astype(float)
    else:
        when = pd.to_datetime(column, errors="coerce")
    times, counts = np.unique(when.dropna().to_numpy(), return_counts=True)
    if len(times) < 2:
        raise InvalidInput(f"{where} needs at least two distinct times in '{column.name}' (found {len(times)})")
    after = np.cumsum(counts[::-1])[::-1][1:]  # rows held out if the cut is before times[1], times[2], ...
    want = fraction * len(column)
    first = times[1 + int(np.argmin(np.abs(after - want)))]
    return np.flatnonzero((when >= first).to_numpy())


def report_lines(dataset: Dataset) -> list[str]:
    """The integration and cleaning report as readable lines (``civicml data``)."""
    r = dataset.report
    lines = []
    for s in r.get("sources", []):
        lines.append(f"source {s['path']}: {s['files']} file(s), {s['rows']} rows, {s['columns']} columns")
    for j in r.get("joins", []):
        on = ", ".join(j["on"]) + (f" (time within {j['time']})" if j.get("time") else "")
        lines.append(f"join {j['how']} {j['source']} on {on}: {j['matched']} of {j['rows_before']} rows matched, "
                     f"{j['rows_after']} rows after")
    for key, title in (("unparseable_dates", "unparseable dates (rows kept, date missing)"),
                       ("unmapped_codes", "category codes without a mapping (kept as they are)"),
                       ("not_numbers", "values that are not numbers (set missing)")):
        if r.get(key):
            lines.append(f"{title}: " + ", ".join(f"{c} {n}" for c, n in r[key].items()))
    if r.get("rows_without_target"):
        lines.append(f"rows without a target value: {r['rows_without_target']} dropped")
    p = r.get("privacy", {})
    lines.append(f"privacy: dropped {p.get('dropped') or '-'}, hashed {p.get('hashed') or '-'}, "
                 f"masked {p.get('masked') or '-'}, allowed {p.get('allowed') or '-'}")
    if r.get("forecast"):
        f = r["forecast"]
        lines.append(f"forecast: horizon {f['horizon']}, lag features {', '.join(f['lags'])}; "
                     f"{f['rows_without_history']} first rows without history dropped")
    lines.append("features: " + ", ".join(f"{c} ({t})" for c, t in r.get("features", {}).items()))
    if r.get("classes"):
        lines.append(f"target classes: {r['classes']}")
    lines.append(f"rows: {r.get('rows')} usable; held-out {r.get('holdout', '-')}; "
                 f"{r.get('training_rows', len(dataset))} for training and validation")
    return lines


__all__ = ["TabularUseCase", "report_lines", "use_case_home"]
