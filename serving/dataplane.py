"""Input validation, separate from protocols (serving/codecs.py) and runtimes (serving/runtime.py).

A :class:`Validator` is compiled once per loaded model from its signature and the metadata logged
with it: allowed categories; allowed values of numeric columns such as hour 0-23; yes/no columns
(``booleans``: a JSON boolean, 0/1 or a usual spelling, read by :mod:`civicml.booleans` as training
read the file); each numeric feature's range in the training data (``observed_ranges``) and what to do
outside it (``out_of_range``): ``refuse`` makes it a bound like hour 0-23 (and the OpenAPI schema says
so), ``warn`` answers and :meth:`Validator.out_of_range` names the values for a warning. Codecs hand it a
:class:`Table` (column name -> list of values) or a nested-list tensor; it returns checked numpy
columns (:class:`~serving.batching.Columns`) or an array, without building a DataFrame per request.
Every problem is an :class:`~civicml.errors.InvalidInput` naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

from civicml.booleans import SPELLINGS, model_value, string_pattern
from civicml.errors import InvalidInput
from serving.batches import Columns, Row

MAX_ROWS = 10_000
MAX_TEXT = 10_000  # characters in one string field
_FEW = 16  # rows a column check reads in one plain pass first (a request's few rows: most of them)
_INT_BOUNDS = {"long": (-(2**63), 2**63 - 1), "integer": (-(2**31), 2**31 - 1)}
_FLOAT_MAX = {"double": np.finfo(np.float64).max, "float": float(np.finfo(np.float32).max)}
_NUMERIC = {"long": np.int64, "integer": np.int32, "double": np.float64, "float": np.float32}


class TooLarge(InvalidInput):
    """The request is over a size limit (HTTP 413)."""


class UnsupportedMediaType(InvalidInput):
    """The request's content type is not one the protocol speaks (HTTP 415)."""


class OutOfRange(InvalidInput):
    """A value outside a column's bounds (declared, or the training range with ``out_of_range: refuse``)."""

    def __init__(self, message: str, column: str):
        super().__init__(message)
        self.column = column


@dataclass
class Table:
    """A request's rows as columns, straight from the codec: name -> list of raw JSON values."""

    columns: dict[str, list]
    rows: int


@dataclass
class InferenceRequest:
    data: Any  # Columns for column signatures, ndarray for tensors
    params: dict | None = None


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)


@dataclass(frozen=True)
class _ColumnCheck:
    name: str
    kind: str  # long, integer, double, float, string, boolean, other
    required: bool
    allowed: frozenset | None
    allowed_text: str
    bounds: tuple[float, float] | None  # from numeric categories: the declared range
    boolean: bool = False  # a yes/no column: any spelling of civicml.booleans, given to the model as true/false
    bounds_why: str = ""  # said after a refused value: where the bounds come from
    missing_ok: bool = True  # a float column's missing value (null, NaN) reaches the model, which answers it

    def __call__(self, values: list) -> np.ndarray:
        if not self.boolean and len(values) <= _FEW:
            fast = self._plain(values)
            if fast is not None:
                return fast
        name = self.name
        if self.boolean:
            return self._booleans(values)
        if self.kind == "string":
            allowed = self.allowed
            for row, value in enumerate(values):
                if value.__class__ is not str:
                    if _missing(value):
                        raise InvalidInput(f"column '{name}' has a missing value in row {row}")
                    raise InvalidInput(f"column '{name}' must be text, got {_short(value)}")
                if len(value) > MAX_TEXT:
                    raise InvalidInput(f"column '{name}' has a value longer than {MAX_TEXT} characters")
                if not value.strip():
                    raise InvalidInput(f"column '{name}' has an empty value in row {row}")
                if allowed is not None and value not in allowed:
                    raise InvalidInput(f"unknown {name} {_short(value)} (known: {self.allowed_text})")
            out = np.empty(len(values), dtype=object)
            out[:] = values
            return out
        if self.kind in _NUMERIC:
            return self._numbers(values)
        for row, value in enumerate(values):
            if _missing(value):
                raise InvalidInput(f"column '{name}' has a missing value in row {row}")
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out

    def _plain(self, values: list) -> np.ndarray | None:
        """A few values that are plainly fine (text within its limits, finite numbers of the column's kind
        within its bounds): checked in one pass. None for anything else, which the checks below read
        (and refuse with their message)."""
        kind, allowed = self.kind, self.allowed
        if kind == "string":
            for value in values:
                if value.__class__ is not str or not value or len(value) > MAX_TEXT or value.isspace() \
                        or (allowed is not None and value not in allowed):
                    return None
            out = np.empty(len(values), dtype=object)
            out[:] = values
            return out
        numeric = _NUMERIC.get(kind)
        if numeric is None:
            return None
        whole, bounds = kind in _INT_BOUNDS, self.bounds
        low, high = _INT_BOUNDS[kind] if whole else (-_FLOAT_MAX[kind], _FLOAT_MAX[kind])
        if bounds is not None:
            low, high = max(low, bounds[0]), min(high, bounds[1])
        for value in values:
            cls = value.__class__
            if not (cls is int or (cls is float and not whole)) or not low <= value <= high \
                    or (allowed is not None and value not in allowed):
                return None  # NaN fails the comparison too
        return np.asarray(values, dtype=numeric)

    def _booleans(self, values: list) -> np.ndarray:
        out = np.empty(len(values), dtype=object)
        for row, value in enumerate(values):
            read = model_value(value)
            if read is None:
                if _missing(value):
                    raise InvalidInput(f"column '{self.name}' has a missing value in row {row}")
                raise InvalidInput(f"column '{self.name}' must be a yes/no value ({SPELLINGS}, or a JSON "
                                   f"boolean), got {_short(value)}")
            out[row] = read
        return out

    def _numbers(self, values: list) -> np.ndarray:
        name, whole = self.name, self.kind in _INT_BOUNDS
        low, high = _INT_BOUNDS[self.kind] if whole else (-_FLOAT_MAX[self.kind], _FLOAT_MAX[self.kind])
        if len(values) > 64:  # a batch (a file being scored): whole columns at once when nothing is refused
            fast = self._numbers_at_once(values, whole, low, high)
            if fast is not None:
                return fast
        out = []
        for row, value in enumerate(values):
            cls = value.__class__
            if _missing(value) or (isinstance(value, np.floating) and value != value):
                # A missing number (None, NaN) is NaN in a float column, for a pipeline that imputes it;
                # an integer column has no NaN to hold it, and a model that cannot answer it is not given one.
                if whole or not self.missing_ok:
                    raise InvalidInput(f"column '{name}' has a missing value in row {row}")
                out.append(float("nan"))
                continue
            if cls is not int and cls is not float:
                if isinstance(value, bool) or not isinstance(value, (int, float, np.number, str)):
                    raise InvalidInput(f"column '{name}' must be numeric, got {_short(value)}")
                try:
                    value = float(value) if not isinstance(value, (int, np.integer)) else int(value)
                except (ValueError, OverflowError):
                    raise InvalidInput(f"column '{name}' must be numeric, got {_short(value)}") from None
            if value != value or value in (float("inf"), float("-inf")):
                raise InvalidInput(f"column '{name}' must be a finite number, got {value!r}")
            if whole and value.__class__ is not int:
                if not float(value).is_integer():
                    raise InvalidInput(f"column '{name}' must hold whole numbers, got {value!r}")
                if not low <= value <= high:
                    raise InvalidInput(f"column '{name}' is out of range for {self.kind}: {value!r}")
                value = int(value)
            if not low <= value <= high:
                raise InvalidInput(f"column '{name}' is out of range for {self.kind}: {value!r}")
            if self.bounds is not None and not self.bounds[0] <= value <= self.bounds[1]:
                raise OutOfRange(f"column '{name}' must be between {_num(self.bounds[0])} and "
                                 f"{_num(self.bounds[1])}{self.bounds_why}, got {value!r}", name)
            if self.allowed is not None and value not in self.allowed:
                raise InvalidInput(f"column '{name}' must be one of {self.allowed_text}, got {value!r}")
            out.append(value)
        return np.asarray(out, dtype=_NUMERIC[self.kind])

    def _numbers_at_once(self, values: list, whole: bool, low: float, high: float) -> np.ndarray | None:
        """The loop's answer for a column of plain ints (or finite floats in a float column) that all pass,
        checked with numpy; None whenever anything would be refused or converted: the loop then says why."""
        kinds = set(map(type, values))
        if self.allowed is not None or not (kinds == {int} or (kinds <= {int, float} and not whole)):
            return None
        try:
            array = np.asarray(values, dtype=np.int64 if kinds == {int} else np.float64)
        except OverflowError:
            return None
        if not np.isfinite(array).all() or array.min() < low or array.max() > high:
            return None
        if self.bounds is not None and (array.min() < self.bounds[0] or array.max() > self.bounds[1]):
            return None
        return array.astype(_NUMERIC[self.kind], copy=False)


def _column_schema(check: _ColumnCheck) -> dict:
    kind = check.kind
    if check.boolean:
        return {"anyOf": [{"type": "boolean"}, {"type": "integer", "enum": [0, 1]},
                          {"type": "string", "pattern": string_pattern()}],
                "description": f"a yes/no value: {SPELLINGS}, or a JSON boolean"}
    if kind == "string":
        if check.allowed is not None:
            return {"type": "string", "enum": sorted(check.allowed)}
        return {"type": "string", "minLength": 1, "maxLength": MAX_TEXT, "pattern": "\\S"}
    if kind in _NUMERIC:
        whole = kind in _INT_BOUNDS
        low, high = _INT_BOUNDS[kind] if whole else (-float(_FLOAT_MAX[kind]), float(_FLOAT_MAX[kind]))
        if check.bounds is not None:
            low, high = max(low, check.bounds[0]), min(high, check.bounds[1])
        nullable = not whole and check.missing_ok  # null: a missing value, for a model that imputes it
        out = {"type": "integer" if whole else (["number", "null"] if nullable else "number"),
               "minimum": int(low) if whole else low, "maximum": int(high) if whole else high}
        if check.allowed is not None:
            out["enum"] = sorted(v for v in check.allowed if low <= v <= high)
        return out
    if kind == "boolean":
        return {"type": "boolean"}
    return {"not": {"type": "null"}}


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Validator:
    """Checks compiled once from a model's signature and metadata; applied to every request."""

    def __init__(self, signature, metadata: dict | None):
        self.signature = signature
        inputs = signature.inputs if signature is not None else None
        self.tensor = inputs is not None and inputs.is_tensor_spec()
        self.checks: list[_ColumnCheck] = []
        self.names: list[str] = []
        self.refuse = (metadata or {}).get("out_of_range", "warn") == "refuse"
        self.observed: dict[str, tuple[float, float]] = {}  # warn: numeric columns whose range only warns
        if inputs is None or self.tensor:
            self.tensor_spec = inputs.inputs[0] if self.tensor else None
            return
        metadata = metadata or {}
        categories = metadata.get("categories") or {}
        ranges = metadata.get("ranges") or {}
        booleans = set(metadata.get("booleans") or ())
        observed = metadata.get("observed_ranges") or {}
        for spec in inputs.inputs:
            kind = str(spec.type).removeprefix("DataType.")
            allowed = categories.get(spec.name)
            bounds, why = None, ""
            if spec.name in ranges:
                low, high = ranges[spec.name]
                bounds = (float(low), float(high))
            allowed_set = frozenset(allowed) if allowed else None
            allowed_text = ", ".join(map(str, allowed)) if allowed else ""
            if allowed and kind in _NUMERIC and all(isinstance(v, (int, float)) for v in allowed):
                low, high = min(allowed), max(allowed)
                if kind in _INT_BOUNDS and sorted(allowed) == list(range(int(low), int(high) + 1)):
                    bounds, allowed_set = (float(low), float(high)), None  # a declared range: say it as one
            if kind in _NUMERIC and spec.name in observed and allowed_set is None:
                seen = (float(observed[spec.name][0]), float(observed[spec.name][1]))
                if self.refuse:  # the training range is a bound too (within any declared one)
                    low, high = bounds or (-float("inf"), float("inf"))
                    bounds, why = (max(low, seen[0]), min(high, seen[1])), " (the range of the training data)"
                elif bounds is None or seen[0] > bounds[0] or seen[1] < bounds[1]:
                    self.observed[spec.name] = seen
            self.checks.append(_ColumnCheck(spec.name, kind, getattr(spec, "required", True), allowed_set,
                                            allowed_text, bounds, spec.name in booleans and kind == "string",
                                            why))
            self.names.append(spec.name)

    def describe(self) -> list[dict]:
        """The inputs as (name, kind, range/allowed values): for V2 metadata and the OpenAPI document."""
        return [{"name": c.name, "datatype": c.kind, "required": c.required,
                 **({"range": [c.bounds[0], c.bounds[1]]} if c.bounds else {}),
                 **({"allowed": sorted(c.allowed, key=str)} if c.allowed else {})} for c in self.checks]

    @property
    def kinds(self) -> dict[str, str]:
        """Each input column's datatype by name (what a V2 request's tensors are checked against): computed
        once, as the columns' kinds never change after load (:meth:`learn_limits` changes bounds only)."""
        kinds = self.__dict__.get("_kinds")
        if kinds is None:
            kinds = self.__dict__["_kinds"] = {c.name: c.kind for c in self.checks}
        return kinds

    def json_schema(self) -> dict | None:
        """One row as JSON Schema (OpenAPI 3.1): what the checks above accept, said for clients and fuzzers.

        None for tensor models and models without a signature (their rows are not named columns)."""
        if self.tensor or not self.checks:
            return None
        properties = {}
        for check in self.checks:
            properties[check.name] = _column_schema(check)
        return {"type": "object", "properties": properties,
                "required": [c.name for c in self.checks if c.required]}

    def out_of_range(self, payload: Any) -> list[dict]:
        """Values of an accepted request outside the range the model saw in training (``warn``): one entry
        per column, with its rows (at most 20 listed), the training range and a sentence. Empty with
        ``refuse`` (such values never get this far) or when every value is within range."""
        if not self.observed:
            return []
        if isinstance(payload, pd.DataFrame):
            payload = table_of_frame(payload)
        if not isinstance(payload, Table):
            return []
        out = []
        for name, (low, high) in self.observed.items():
            values = payload.columns.get(name)
            if values is None:
                continue
            rows = _outside(values, low, high)
            if len(rows):
                out.append({"column": name, "rows": [int(i) for i in rows[:20]], "count": int(len(rows)),
                            "range": [low, high],
                            "message": f"column '{name}' has {len(rows)} value(s) outside the range the model saw "
                                       f"in training ({_num(low)} to {_num(high)}); the answer is an extrapolation"})
        return out

    def learn_limits(self, predict: Callable[[Any], Any], example: pd.DataFrame) -> dict[str, str]:
        """What the model itself cannot answer, found at load by asking it, so that the checks and the schema
        say so (a 400 naming the column) instead of the model failing (422) on a request the schema allows.

        For each float column with no bounds: the example's first row with a missing value there, and with
        values of magnitude 1e3, 1e6, ... 1e300 (both signs). A missing value the model cannot answer
        (it raises, or answers a non-finite number) is refused; a magnitude it cannot answer bounds the
        column below it. Returns column -> what was learnt, for the log."""
        import dataclasses

        probed = [i for i, c in enumerate(self.checks) if c.kind in ("double", "float") and not c.boolean
                  and (c.bounds is None or c.missing_ok)]
        if not probed or example is None or not len(example):
            return {}
        row = example.head(1).reset_index(drop=True)

        def answers(values: dict[int, float]) -> dict[int, bool]:
            return self._answered(predict, row, values)

        learnt: dict[str, str] = {}
        self.__dict__.pop("_plan", None)  # the checks change below: one row's plan is made again
        no_missing = [i for i, ok in answers({i: float("nan") for i in probed}).items() if not ok]
        for i in no_missing:
            self.checks[i] = dataclasses.replace(self.checks[i], missing_ok=False)
            learnt[self.checks[i].name] = "no missing values"
        unbounded = [i for i in probed if self.checks[i].bounds is None]
        limit = self._magnitude_limits(answers, unbounded)
        for i in unbounded:
            if limit[i] == [None, None]:
                continue
            top = float(_FLOAT_MAX[self.checks[i].kind])
            low, high = -(limit[i][0] or top), limit[i][1] or top
            self.checks[i] = dataclasses.replace(self.checks[i], bounds=(low, high),
                                                 bounds_why=" (the model gives no finite answer beyond)")
            learnt[self.checks[i].name] = f"between {_num(low)} and {_num(high)}"
        self.__dict__.pop("_plan", None)
        return learnt

    def _answered(self, predict: Callable[[Any], Any], row: pd.DataFrame,
                  values: dict[int, float]) -> dict[int, bool]:
        """column index -> whether the model answers ``row`` with that column's value replaced."""
        frame = pd.concat([row] * len(values), ignore_index=True)
        for k, (i, value) in enumerate(values.items()):
            frame.loc[k, self.checks[i].name] = value
        try:
            return dict(zip(values, _finite_rows(predict(self.prepare(frame).data), len(values))))
        except Exception:  # noqa: BLE001 - one of them fails the batch: ask one at a time
            out = {}
            for i, value in values.items():
                one = row.copy()
                one.loc[0, self.checks[i].name] = value
                try:
                    out[i] = bool(_finite_rows(predict(self.prepare(one).data), 1)[0])
                except Exception:  # noqa: BLE001 - the model refuses this value
                    out[i] = False
            return out

    def _magnitude_limits(self, answers: Callable[[dict[int, float]], dict[int, bool]],
                          unbounded: list[int]) -> dict[int, list]:
        """column index -> [magnitude below 0, above 0] the model last answered before it failed (None: all)."""
        limit = {i: [None, None] for i in unbounded}
        for sign, side in ((-1.0, 0), (1.0, 1)):
            asked, answered = list(unbounded), {i: 100.0 for i in unbounded}
            for exponent in (3, 6, 9, 12, 15, 18, 24, 30, 38, 60, 100, 200, 300):
                magnitude = 10.0 ** exponent
                ask = {i: sign * magnitude for i in asked if magnitude < _FLOAT_MAX[self.checks[i].kind]}
                if not ask:
                    break
                for i, fine in answers(ask).items():
                    if fine:
                        answered[i] = magnitude
                    else:  # bounded at the largest magnitude it answered
                        limit[i][side] = answered[i]
                        asked.remove(i)
        return limit

    def _row_plan(self) -> tuple | None:
        """How :meth:`_row` checks one row: (name, text?, whole?, allowed, low, high) per column and the
        columns' dtypes, made once from the checks (again after :meth:`learn_limits` changes them); None
        when a column is of a kind it leaves to the checks (yes/no, other types) or not required."""
        plan = self.__dict__.get("_plan", False)
        if plan is not False:
            return plan
        steps, dtypes = [], {}
        for check in self.checks:
            kind = check.kind
            if check.boolean or not check.required or (kind != "string" and kind not in _NUMERIC):
                steps = None
                break
            if kind == "string":
                steps.append((check.name, True, False, check.allowed, 0, 0))
                dtypes[check.name] = object
                continue
            whole = kind in _INT_BOUNDS
            low, high = _INT_BOUNDS[kind] if whole else (-_FLOAT_MAX[kind], _FLOAT_MAX[kind])
            if check.bounds is not None:
                low, high = max(low, check.bounds[0]), min(high, check.bounds[1])
            steps.append((check.name, False, whole, check.allowed, low, high))
            dtypes[check.name] = _NUMERIC[kind]
        plan = self.__dict__["_plan"] = (tuple(steps), dtypes) if steps else None
        return plan

    def _row(self, columns: dict, plan: tuple) -> Row | None:
        """A one-row table whose values are all plainly fine (as :meth:`_ColumnCheck._plain` reads them), as a
        :class:`~serving.batching.Row` with its cost; None for anything else, which the checks read (and
        refuse with their message)."""
        row, cost = {}, 1
        for name, text, whole, allowed, low, high in plan[0]:
            values = columns.get(name)
            if values is None or len(values) != 1:
                return None
            value = values[0]
            cls = value.__class__
            if text:
                if cls is not str or not value or len(value) > MAX_TEXT or value.isspace() \
                        or (allowed is not None and value not in allowed):
                    return None
                cost += len(value)
            elif not (cls is int or (cls is float and not whole)) or not low <= value <= high \
                    or (allowed is not None and value not in allowed):
                return None  # NaN fails the comparison too
            row[name] = value
        return Row(row, plan[1], cost)

    def columns(self, table: Table) -> Columns:
        rows = table.rows
        if rows == 1 and self.signature is not None and self.signature.inputs is not None:
            plan = self._row_plan()
            if plan is not None:
                row = self._row(table.columns, plan)
                if row is not None:
                    return row
        if rows == 0:
            raise InvalidInput("the request has no rows")
        if rows > MAX_ROWS:
            raise TooLarge(f"too many rows: {rows} (at most {MAX_ROWS} per request)")
        if self.signature is None or self.signature.inputs is None:
            return Columns({k: _objects(v) for k, v in table.columns.items()}, rows)
        out = {}
        for check in self.checks:
            values = table.columns.get(check.name)
            if values is None:
                if check.required:
                    raise InvalidInput(f"missing column '{check.name}' (the model needs: {', '.join(self.names)})")
                continue
            out[check.name] = check(values)
        return Columns(out, rows)

    def tensor_input(self, payload: Any) -> np.ndarray:
        spec = self.tensor_spec
        try:
            array = np.asarray(payload, dtype=spec.type)
        except (ValueError, TypeError, OverflowError):
            raise InvalidInput(f"the input must be a numeric array of {spec.type}") from None
        shape = spec.shape
        if array.ndim != len(shape) or any(s not in (-1, None) and s != a for s, a in zip(shape, array.shape)):
            raise InvalidInput(f"the input must have shape {tuple(shape)} (-1 = any), got {array.shape}")
        if array.shape[0] == 0:
            raise InvalidInput("the request has no rows")
        if array.shape[0] > MAX_ROWS:
            raise TooLarge(f"too many rows: {array.shape[0]} (at most {MAX_ROWS} per request)")
        if np.issubdtype(array.dtype, np.floating) and not all_finite(array):
            raise InvalidInput("the input must hold finite numbers")
        return array

    def prepare(self, payload: Any, params: dict | None = None) -> InferenceRequest:
        """A codec's payload (Table, DataFrame or nested list) -> a checked model input."""
        if payload.__class__ is Table and not self.tensor:
            return InferenceRequest(self.columns(payload), params)
        if self.tensor:
            if isinstance(payload, (Table, pd.DataFrame)):
                raise InvalidInput("this model takes a tensor: send 'instances' or 'inputs' with a nested list")
            return InferenceRequest(self.tensor_input(payload), params)
        if isinstance(payload, pd.DataFrame):
            payload = table_of_frame(payload)
        elif not isinstance(payload, Table):
            if isinstance(payload, list) and payload and not isinstance(payload[0], (list, dict)):
                payload = Table({0: payload}, len(payload))
            else:
                raise InvalidInput("this model takes named columns: send dataframe_split, dataframe_records or CSV")
        return InferenceRequest(self.columns(payload), params)


def _finite_rows(answer: Any, rows: int) -> np.ndarray:
    """Per row of a model's answer: whether every number in it is finite."""
    ok = np.ones(rows, dtype=bool)
    parts = list(answer.values()) if isinstance(answer, dict) else \
        [answer[c] for c in answer.columns] if isinstance(answer, pd.DataFrame) else [answer]
    for part in parts:
        values = np.asarray(part)
        if values.dtype.kind not in "fc" or len(values) != rows:
            continue
        finite = np.isfinite(values)
        ok &= finite.reshape(rows, -1).all(axis=1) if values.ndim > 1 else finite
    return ok


_GIL_HELD = 500  # numpy lets go of the GIL for a loop over more values than this


def all_finite(array: np.ndarray) -> bool:
    """Whether every value is finite, in pieces numpy runs without letting go of the GIL: on the event loop,
    a request's image (3,072 values) in one piece let the batch worker take the GIL, and the loop then waited
    for it (a tenth of the loop's samples at c32, py-spy)."""
    flat = array.reshape(-1)
    if flat.size <= _GIL_HELD:
        return bool(np.isfinite(flat).all())
    return all(np.isfinite(flat[i:i + _GIL_HELD]).all() for i in range(0, flat.size, _GIL_HELD))


def all_within(array: np.ndarray, low: float, high: float) -> bool:
    """Whether every value is within ``[low, high]``, in pieces that keep the GIL (:func:`all_finite`)."""
    flat = array.reshape(-1)
    return all(flat[i:i + _GIL_HELD].min() >= low and flat[i:i + _GIL_HELD].max() <= high
               for i in range(0, flat.size, _GIL_HELD))


def _outside(values: list, low: float, high: float):
    """Positions of the values below ``low`` or above ``high`` in a checked column (numbers, None, numbers as
    text); missing values are not outside. A loop for a request's few rows, numpy for many."""
    if len(values) <= 64:
        out = []
        for i, x in enumerate(values):
            if x.__class__ is not float and x.__class__ is not int:
                try:
                    x = float(x)
                except (TypeError, ValueError):
                    continue
            if x < low or x > high:
                out.append(i)
        return out
    try:
        numbers = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        numbers = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        return np.flatnonzero((numbers < low) | (numbers > high))


def _objects(values: list) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def table_of_frame(frame: pd.DataFrame) -> Table:
    if frame.columns.duplicated().any():
        raise InvalidInput("duplicate column names")
    return Table({name: frame[name].tolist() for name in frame.columns}, len(frame))


def prepare(payload: Any, params: dict | None, signature, metadata: dict) -> InferenceRequest:
    """One-off validation (compiles the checks each call; the endpoint keeps a compiled Validator)."""
    return Validator(signature, metadata).prepare(payload, params)
