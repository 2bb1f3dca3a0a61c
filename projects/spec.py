"""A use-case file: one city problem described in YAML, versioned next to the department's data.

::

    name: inspections
    description: Predict which restaurant inspections find a violation.
    task: classification            # classification | regression | forecasting
    target: violation
    sources:
      - path: inspections.csv       # CSV, Parquet or JSON; a glob reads several files
        rename: {insp_date: inspected_at}
        dates: [inspected_at]
        timezone: {inspected_at: America/Chicago}   # naive times are local to this zone
        categories: {risk: {"1": high, "2": medium, "3": low}}
      - path: permits/*.parquet
        units: {area_sqft: {to: area_m2, factor: 0.0929}}
        join: {how: left, on: [site_id], time: {left: inspected_at, right: issued_at, tolerance: 30d}}
    features: {all_but: [inspection_id]}   # or "all", or a list
    types: {notes: text, cuisine: category, inspection_id: id}
    columns: {area_m2: {label: Floor area, unit: m²}}   # optional: how explanations name columns
    metric: macro_f1                # any metric of projects.metrics; direction defaults from it
    privacy:
      drop: [inspector_name]
      hash: [owner_phone]
      mask: [notes]                 # e-mails, phones, names and street addresses in free text
    holdout: {split: time, column: inspected_at, fraction: 0.2}   # or {file: x.csv}, random, group
    families: [decision_tree, random_forest, hist_gradient_boosting, svm, linear, paddle_mlp]
    search: ["random_forest.max_depth=4:24"]   # the grammar of `civicml tune --set`
    policy: {min_value: 0.6}        # or a path to a policy YAML
    inputs: {out_of_range: warn}    # a served row outside what the model saw: warn (answer + warning) | refuse

Types: numeric, category, text, date, year (a bare year such as 2019: a number to the model, an order for
``split: time``), boolean (true/false, yes/no, y/n, t/f, 1/0 in any case; ``civicml.booleans``) and id
(left out of the features).

Every mistake is one line naming the field, with "did you mean" for typos.
Paths in the file are relative to the file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from civicml.errors import InvalidInput, did_you_mean

TASKS = ("classification", "regression", "forecasting")
TYPES = ("numeric", "category", "text", "date", "year", "boolean", "id")
OUT_OF_RANGE = ("warn", "refuse")
JOIN_HOWS = ("left", "inner")
SPLITS = ("random", "time", "group")
FAMILY_NAMES = ("decision_tree", "random_forest", "hist_gradient_boosting", "svm", "linear", "paddle_mlp")
DEFAULT_FAMILIES = ("decision_tree", "random_forest", "hist_gradient_boosting", "svm", "linear", "paddle_mlp")


def duration(text: str):
    """``text`` (30min, 12h, 7d) as a ``pandas.Timedelta``; a lower-case day unit is read as pandas' ``D``
    (pandas deprecates ``d``, and people write it)."""
    import re

    import pandas as pd

    return pd.Timedelta(re.sub(r"(?<=\d)\s*d\b", "D", str(text).strip()))


class _Reader:
    """Reads one mapping of the file, naming the field in every error."""

    def __init__(self, data: Any, where: str, path: str, known: tuple[str, ...]):
        self.where = where
        self.path = path
        if not isinstance(data, dict):
            raise InvalidInput(f"{where}: {path or 'the file'} must be a mapping, got {type(data).__name__}")
        for key in data:
            if key not in known:
                name = f"{path}.{key}" if path else str(key)
                raise InvalidInput(f"{where}: unknown field '{name}'{did_you_mean(key, known)} "
                                   f"(known: {', '.join(known)})")
        self.data = data

    def name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def fail(self, key: str, message: str):
        raise InvalidInput(f"{self.where}: field '{self.name(key)}' {message}")

    def get(self, key, default=None):
        return self.data.get(key, default)

    def string(self, key, default=None, required=False, choices=None) -> str | None:
        value = self.data.get(key, default)
        if value is None:
            if required:
                self.fail(key, "is required")
            return None
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            self.fail(key, f"must be a string, got {value!r}")
        value = str(value)
        if choices and value not in choices:
            self.fail(key, f"must be one of {', '.join(choices)}, got '{value}'{did_you_mean(value, choices)}")
        return value

    def strings(self, key) -> list[str]:
        value = self.data.get(key)
        if value is None:
            return []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
            self.fail(key, f"must be a list of names, got {value!r}")
        return [str(v) for v in value]

    def mapping(self, key) -> dict:
        value = self.data.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(key, f"must be a mapping, got {value!r}")
        return {str(k): v for k, v in value.items()}

    def number(self, key, default=None, low=None, high=None, integer=False):
        value = self.data.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and int(value) != value):
            self.fail(key, f"must be {'an integer' if integer else 'a number'}, got {value!r}")
        if (low is not None and value < low) or (high is not None and value > high):
            self.fail(key, f"must be between {low} and {high}, got {value}")
        return int(value) if integer else float(value)


@dataclass(frozen=True)
class TimeJoin:
    left: str
    right: str
    tolerance: str | None = None
    direction: str = "backward"


@dataclass(frozen=True)
class Join:
    how: str = "left"
    on: tuple[str, ...] = ()
    time: TimeJoin | None = None


@dataclass(frozen=True)
class Unit:
    to: str
    factor: float = 1.0
    offset: float = 0.0


@dataclass(frozen=True)
class Source:
    path: str  # as written (relative to the file), may be a glob
    format: str | None = None
    rename: dict = field(default_factory=dict)
    dates: tuple[str, ...] = ()
    date_format: str | None = None
    timezone: dict = field(default_factory=dict)
    units: dict = field(default_factory=dict)  # column -> Unit
    categories: dict = field(default_factory=dict)  # column -> {code: value}
    join: Join | None = None


@dataclass(frozen=True)
class Privacy:
    drop: tuple[str, ...] = ()
    hash: tuple[str, ...] = ()
    mask: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()  # columns that look personal but are not (checked by a person)
    check: bool = True

    @property
    def declared(self) -> set[str]:
        return set(self.drop) | set(self.hash) | set(self.mask) | set(self.allow)


@dataclass(frozen=True)
class Holdout:
    file: str | None = None
    split: str | None = None  # random | time | group
    fraction: float = 0.2
    seed: int = 0
    column: str | None = None


@dataclass(frozen=True)
class Forecast:
    time: str
    horizon: int = 1
    lags: tuple[int, ...] = (1, 2, 3)
    group: str | None = None


@dataclass(frozen=True)
class UseCaseSpec:
    name: str
    task: str
    target: str
    sources: tuple[Source, ...]
    path: Path  # the file itself (absolute)
    description: str = ""
    registered_model: str = ""
    features: tuple[str, ...] | None = None  # None: all columns but target, ids and privacy drops
    exclude: tuple[str, ...] = ()
    types: dict = field(default_factory=dict)
    metric: str = ""
    direction: str = ""
    privacy: Privacy = field(default_factory=Privacy)
    holdout: Holdout = field(default_factory=Holdout)
    families: tuple[str, ...] = DEFAULT_FAMILIES
    search: tuple[str, ...] = ()
    policy: dict | str | None = None
    forecast: Forecast | None = None
    out_of_range: str = "warn"  # inputs.out_of_range: what serving does with values outside the training range
    sha256: str = ""
    columns: dict = field(default_factory=dict)  # {column: {label, unit}}: readable names for explanations

    @property
    def folder(self) -> Path:
        return self.path.parent

    def resolve(self, relative: str) -> Path:
        p = Path(relative).expanduser()
        return p if p.is_absolute() else self.folder / p


TOP = ("name", "description", "task", "target", "registered_model", "sources", "features", "types", "metric",
       "direction", "privacy", "holdout", "families", "search", "policy", "forecast", "inputs", "columns")
COLUMN = ("label", "unit")
SOURCE = ("path", "format", "rename", "dates", "date_format", "timezone", "units", "categories", "join")
JOIN = ("how", "on", "time")
TIME_JOIN = ("left", "right", "tolerance", "direction")
PRIVACY = ("drop", "hash", "mask", "allow", "check")
HOLDOUT = ("file", "split", "fraction", "seed", "column")
FORECAST = ("time", "horizon", "lags", "group")
INPUTS = ("out_of_range",)


def load_spec(path: str | Path) -> UseCaseSpec:
    """Read and check a use-case file; raise ``InvalidInput`` (one line) on the first mistake."""
    path = Path(path).expanduser().resolve()
    where = f"use-case file {path}"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        from civicml.errors import NotFound

        raise NotFound(f"use-case file not found: {path}") from None
    except IsADirectoryError:
        raise InvalidInput(f"{where}: is a folder; give the YAML file (e.g. {path / 'usecase.yaml'})") from None
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise InvalidInput(f"{where}: not valid YAML{at}") from None
    return spec_from_dict(data, path, where, hashlib.sha256(raw).hexdigest())


def spec_from_dict(data: Any, path: Path, where: str = "use case", sha256: str = "") -> UseCaseSpec:
    from projects import metrics

    top = _Reader(data, where, "", TOP)
    name = top.string("name", required=True)
    if not name.replace("_", "").replace("-", "").isalnum():
        top.fail("name", f"may hold letters, digits, '-' and '_' only, got '{name}'")
    task = top.string("task", required=True, choices=TASKS)
    target = top.string("target", required=True)
    raw_sources = top.get("sources")
    if not isinstance(raw_sources, list) or not raw_sources:
        top.fail("sources", "must list at least one source file (each with a 'path')")
    sources = tuple(_source(s, where, i) for i, s in enumerate(raw_sources))
    if sources[0].join is not None:
        raise InvalidInput(f"{where}: field 'sources[0].join': the first source is the base table; joins "
                           f"belong to the sources after it")
    for i, s in enumerate(sources[1:], 1):
        if s.join is None:
            raise InvalidInput(f"{where}: field 'sources[{i}].join' is required: how does it join the ones "
                               f"before it (on which keys)?")

    features, exclude = None, ()
    raw_features = top.get("features", "all")
    if isinstance(raw_features, list):
        features = tuple(top.strings("features"))
    elif isinstance(raw_features, dict):
        sub = _Reader(raw_features, where, "features", ("all_but",))
        exclude = tuple(sub.strings("all_but"))
    elif raw_features != "all":
        top.fail("features", f"must be 'all', a list of columns or {{all_but: [columns]}}, got {raw_features!r}")

    types = top.mapping("types")
    for column, kind in types.items():
        if kind not in TYPES:
            raise InvalidInput(f"{where}: field 'types.{column}' must be one of {', '.join(TYPES)}, "
                               f"got {kind!r}{did_you_mean(kind, TYPES)}")

    metric = top.string("metric") or ("macro_f1" if task == "classification" else "mae")
    try:
        found = metrics.get(metric)
    except InvalidInput as err:
        raise InvalidInput(f"{where}: field 'metric': {err}") from None
    want = "classification" if task == "classification" else "regression"
    if found.task not in (want, "any"):
        top.fail("metric", f"'{metric}' is a {found.task} metric; this is a {task} use case")
    direction = top.string("direction", default=found.direction, choices=("maximize", "minimize"))

    privacy = _privacy(top.mapping("privacy") if top.get("privacy") is not None else {}, where)
    holdout = _holdout(top.get("holdout"), where)
    families = tuple(top.strings("families")) or DEFAULT_FAMILIES
    for f in families:
        if f not in FAMILY_NAMES:
            raise InvalidInput(f"{where}: field 'families': unknown family '{f}'{did_you_mean(f, FAMILY_NAMES)} "
                               f"(known: {', '.join(FAMILY_NAMES)})")
    search = tuple(top.strings("search"))
    policy = top.get("policy")
    if policy is not None and not isinstance(policy, (dict, str)):
        top.fail("policy", "must be a mapping of policy fields or a path to a policy YAML")
    forecast = None
    if task == "forecasting":
        raw = top.get("forecast")
        if raw is None:
            top.fail("forecast", "is required for a forecasting use case: {time: COLUMN, horizon: N}")
        sub = _Reader(raw, where, "forecast", FORECAST)
        lags = sub.get("lags", [1, 2, 3])
        if not isinstance(lags, list) or not all(isinstance(x, int) and x >= 1 for x in lags):
            sub.fail("lags", f"must list positive integers, got {lags!r}")
        forecast = Forecast(sub.string("time", required=True), sub.number("horizon", 1, 1, 10_000, True),
                            tuple(lags), sub.string("group"))
    elif top.get("forecast") is not None:
        top.fail("forecast", "is only for task: forecasting")
    inputs = _Reader(top.get("inputs") or {}, where, "inputs", INPUTS)
    out_of_range = inputs.string("out_of_range", "warn", choices=OUT_OF_RANGE)
    return UseCaseSpec(
        name=name, task=task, target=target, sources=sources, path=path,
        description=top.string("description", "") or "",
        registered_model=top.string("registered_model") or name.replace("_", "-"),
        features=features, exclude=exclude, types=types, metric=metric, direction=direction, privacy=privacy,
        holdout=holdout, families=families, search=search, policy=policy, forecast=forecast,
        out_of_range=out_of_range, sha256=sha256, columns=_columns(top.mapping("columns") if top.get("columns") is not None else {}, where))


def _columns(data: dict, where: str) -> dict:
    """``columns: {Temp: {label: Temperature, unit: °F}}``: each key optional, each value text."""
    out = {}
    for column, raw in data.items():
        sub = _Reader(raw, where, f"columns.{column}", COLUMN)
        out[str(column)] = {k: v for k in COLUMN if (v := sub.string(k)) is not None}
    return out


def _source(data, where: str, i: int) -> Source:
    if isinstance(data, str):
        data = {"path": data}
    r = _Reader(data, where, f"sources[{i}]", SOURCE)
    fmt = r.string("format", choices=("csv", "parquet", "json", "jsonl"))
    units = {}
    for column, spec in r.mapping("units").items():
        if isinstance(spec, (int, float)) and not isinstance(spec, bool):
            units[column] = Unit(column, float(spec))
            continue
        u = _Reader(spec, where, f"sources[{i}].units.{column}", ("to", "factor", "offset"))
        units[column] = Unit(u.string("to") or column, u.number("factor", 1.0), u.number("offset", 0.0))
    categories = {}
    for column, codes in r.mapping("categories").items():
        if not isinstance(codes, dict):
            r.fail(f"categories.{column}", f"must map codes to values, got {codes!r}")
        categories[column] = {str(k): v for k, v in codes.items()}
    timezone = {}
    for column, zone in r.mapping("timezone").items():
        try:
            from zoneinfo import ZoneInfo

            ZoneInfo(str(zone))
        except Exception:  # noqa: BLE001 - zoneinfo raises several kinds
            r.fail(f"timezone.{column}", f"is not a known time zone: {zone!r} (e.g. America/Chicago, UTC)")
        timezone[column] = str(zone)
    join = None
    if r.get("join") is not None:
        raw_join = r.get("join")
        if isinstance(raw_join, dict) and True in raw_join:  # YAML 1.1 reads a bare `on:` key as true
            raw_join = {("on" if k is True else k): v for k, v in raw_join.items()}
        j = _Reader(raw_join, where, f"sources[{i}].join", JOIN)
        on = tuple(j.strings("on"))
        time = None
        if j.get("time") is not None:
            t = _Reader(j.get("time"), where, f"sources[{i}].join.time", TIME_JOIN)
            tolerance = t.string("tolerance")
            if tolerance is not None:
                try:
                    duration(tolerance)
                except ValueError:
                    t.fail("tolerance", f"is not a duration such as 30min, 12h or 7d: {tolerance!r}")
            time = TimeJoin(t.string("left", required=True), t.string("right", required=True), tolerance,
                            t.string("direction", "backward", choices=("backward", "forward", "nearest")))
        if not on and time is None:
            j.fail("on", "is required: the key columns to join on (and/or a time)")
        join = Join(j.string("how", "left", choices=JOIN_HOWS), on, time)
    rename = r.mapping("rename")
    return Source(path=r.string("path", required=True), format=fmt, rename={str(k): str(v) for k, v in rename.items()},
                  dates=tuple(r.strings("dates")), date_format=r.string("date_format"), timezone=timezone,
                  units=units, categories=categories, join=join)


def _privacy(data, where: str) -> Privacy:
    r = _Reader(data, where, "privacy", PRIVACY)
    check = r.get("check", True)
    if not isinstance(check, bool):
        r.fail("check", f"must be true or false, got {check!r}")
    out = Privacy(tuple(r.strings("drop")), tuple(r.strings("hash")), tuple(r.strings("mask")),
                  tuple(r.strings("allow")), check)
    seen: dict[str, str] = {}
    for kind in ("drop", "hash", "mask", "allow"):
        for column in getattr(out, kind):
            if column in seen:
                r.fail(kind, f"names '{column}', which is already under '{seen[column]}'")
            seen[column] = kind
    return out


def _holdout(data, where: str) -> Holdout:
    if data is None:
        return Holdout(split="random", fraction=0.2, seed=0)
    r = _Reader(data, where, "holdout", HOLDOUT)
    file = r.string("file")
    split = r.string("split", choices=SPLITS)
    if (file is None) == (split is None):
        raise InvalidInput(f"{where}: field 'holdout' needs exactly one of 'file' (a held-out export) or 'split' "
                           f"({', '.join(SPLITS)})")
    column = r.string("column")
    if split in ("time", "group") and not column:
        r.fail("column", f"is required for split: {split} (the {'date' if split == 'time' else 'group'} column)")
    return Holdout(file, split, r.number("fraction", 0.2, 0.01, 0.9), r.number("seed", 0, integer=True) or 0, column)


__all__ = ["FAMILY_NAMES", "Forecast", "Holdout", "Join", "OUT_OF_RANGE", "Privacy", "Source", "TASKS", "TYPES",
           "TimeJoin",
           "Unit", "UseCaseSpec", "did_you_mean", "load_spec", "spec_from_dict"]
