"""A request's checked rows on their way through the batcher: :class:`Columns` (and one request's
:class:`Row`), what each row costs and whether a request is admitted, and the merge of many requests' rows
into one model input and the split of its output back to each (serving/batching.py)."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pandas as pd

from civicml.answers import Answer
from civicml.errors import InvalidInput, Unavailable

_FEW_ROWS = 8


class TooCostly(InvalidInput):
    """One request's estimated cost (rows x text length, or tensor values) is over the limit (HTTP 413)."""


class Overloaded(Unavailable):
    """The request's deadline passed before the model could take it (HTTP 503 with ``Retry-After``)."""

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))


def rows_of(data: Any) -> int:
    if isinstance(data, Columns):
        return data.rows
    if isinstance(data, (pd.DataFrame, pd.Series, np.ndarray)):
        return len(data)
    return len(data)


class Columns:
    """Checked column values (name -> 1-d numpy array) that become one DataFrame per batch, not per request."""

    __slots__ = ("values", "rows")

    def __init__(self, values: dict[str, np.ndarray], rows: int):
        self.values = values
        self.rows = rows

    def frame(self) -> pd.DataFrame:
        """The columns as the DataFrame ``pd.DataFrame(values, copy=False)`` makes (:func:`frame_of`)."""
        return frame_of(self.values, self.rows)

    def take(self, start: int, stop: int) -> "Columns":
        return Columns({n: v[start:stop] for n, v in self.values.items()}, stop - start)

    @staticmethod
    def concat(parts: list["Columns"]) -> "Columns":
        first = parts[0]
        if first.__class__ is Row and all(p.__class__ is Row and p.dtypes is first.dtypes for p in parts):
            return Columns(_arrays([p.row for p in parts], first.dtypes), len(parts))
        names = first.values.keys()
        return Columns({n: np.concatenate([p.values[n] for p in parts]) for n in names}, sum(p.rows for p in parts))


class Row(Columns):
    """One checked row (a one-row request: most of them) as the values came, with each column's dtype: a
    batch of rows makes each column's array once (:meth:`Columns.concat`) instead of an array per column per
    request and a concatenation per batch; :attr:`values` makes the arrays for anything else. ``cost``: its
    :func:`row_costs`, counted while it was checked."""

    __slots__ = ("row", "dtypes", "cost", "_arrays")

    def __init__(self, row: dict, dtypes: dict, cost: int):
        self.row, self.dtypes, self.cost, self.rows, self._arrays = row, dtypes, cost, 1, None

    @property
    def values(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            self._arrays = _arrays([self.row], self.dtypes)
        return self._arrays


def _arrays(rows: list[dict], dtypes: dict) -> dict[str, np.ndarray]:
    """Rows' values -> one array per column, of the column's dtype (object: the values as they are)."""
    out = {}
    for name, dtype in dtypes.items():
        if dtype is object:
            column = out[name] = np.empty(len(rows), dtype=object)
            column[:] = [row[name] for row in rows]
        else:
            out[name] = np.array([row[name] for row in rows], dtype=dtype)
    return out


class _FrameMaker:
    """Builds the DataFrame ``pd.DataFrame(values, copy=False)`` would build from checked columns, without its
    inference and checks: numeric and boolean arrays become their own blocks as they are (that call keeps them
    too, unconsolidated), an object array of text only becomes pandas' default text column (pandas 3: Arrow
    strings, ``str``) from one Arrow array, and the column labels are a view of an Index made once per set of
    names. pandas' own construction cost ~120 µs for a batch of 24 single-row 311 requests (5 columns), most of
    a constant model's batch; this ~30 µs. Anything else (other dtypes, text with other values, duplicate or
    unusual names) goes through pandas' constructor. The first use checks it against pandas' own frame on a
    sample (values, dtypes, labels, blocks); if they differ (another pandas), pandas builds every frame."""

    def __init__(self):
        self.ok: bool | None = None  # None: not checked yet
        self._labels: dict[tuple, pd.Index] = {}

    def __call__(self, values: dict, rows: int) -> pd.DataFrame:
        if self.ok is None:
            self.ok = self._agrees()
        if self.ok:
            try:
                made = self._make(values, rows)
            except Exception:  # noqa: BLE001 - pandas' own way below says what is wrong, if anything
                made = None
            if made is not None:
                return made
        return pd.DataFrame(values, copy=False)

    def _make(self, values: dict, rows: int) -> pd.DataFrame | None:
        from pandas._libs import lib
        from pandas.core.internals.construction import arrays_to_mgr

        if not rows or not values:
            return None
        arrays = []
        for array in values.values():
            if array.__class__ is not np.ndarray or array.ndim != 1 or len(array) != rows:
                return None
            kind = array.dtype.kind
            if kind == "O":
                if not lib.is_string_array(array, skipna=False):
                    return None
                array = self._text(array)
            elif array.dtype not in _PLAIN_DTYPES:
                return None
            arrays.append(array)
        names = tuple(values)
        labels = self._labels.get(names)
        if labels is None:
            if not all(name.__class__ is str for name in names) or len(set(names)) != len(names):
                return None
            if len(self._labels) >= 64:
                self._labels.clear()
            labels = self._labels[names] = pd.Index(list(names))
        manager = arrays_to_mgr(arrays, labels.view(), pd.RangeIndex(rows), verify_integrity=False,
                                consolidate=False)
        return pd.DataFrame._from_mgr(manager, axes=manager.axes)

    def _text(self, array: np.ndarray):
        import pyarrow as pa

        return self._text_type(pa.chunked_array([pa.array(array, type=pa.large_string(), from_pandas=True)]),
                               dtype=self._text_dtype)

    def _agrees(self) -> bool:
        """Whether this maker's frames are pandas' own, on a sample of every kind it makes itself."""
        try:
            text = np.empty(3, dtype=object)
            text[:] = ["a", "bé c", "Huge pothole"]
            default = pd.DataFrame({"t": text}, copy=False)["t"].array
            if type(default).__name__ != "ArrowStringArray" or not hasattr(default, "_pa_array"):
                return False  # text stays object (another pandas, or no pyarrow): pandas builds the frames
            self._text_type, self._text_dtype = type(default), default.dtype
            sample = {"t": text, "i": np.arange(3), "f": np.asarray([0.5, np.nan, -1.0]),
                      "i32": np.arange(3, dtype=np.int32), "b": np.asarray([True, False, True]), "u": text.copy()}
            made, expected = self._make(sample, 3), pd.DataFrame(sample, copy=False)
            pd.testing.assert_frame_equal(made, expected, check_exact=True)
            return (made._mgr.nblocks == expected._mgr.nblocks and list(made.dtypes) == list(expected.dtypes)
                    and made.columns.dtype == expected.columns.dtype and type(made.index) is type(expected.index)
                    and all(np.shares_memory(made[n].to_numpy(), sample[n]) ==
                            np.shares_memory(expected[n].to_numpy(), sample[n]) for n in ("i", "f", "b")))
        except Exception:  # noqa: BLE001 - any difference: pandas builds every frame
            return False


_PLAIN_DTYPES = frozenset(np.dtype(t) for t in (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
                                                 np.uint32, np.uint64, np.float32, np.float64))
frame_of = _FrameMaker()


def row_costs(data: Any) -> np.ndarray:
    """The estimated cost of each row: 1 plus the characters of its text values (tensors: values a row)."""
    if data.__class__ is Row:
        return np.array([data.cost], dtype=np.int64)
    rows = rows_of(data)
    if isinstance(data, Columns) and rows <= _FEW_ROWS:  # numpy's per-call cost is most of a few rows' work
        few = [1] * rows
        for values in data.values.values():
            kind = values.dtype.kind
            if kind == "O" or kind in "US":
                for i, value in enumerate(values.tolist()):
                    few[i] += len(value) if isinstance(value, (str, bytes)) else kind == "O"
        return np.array(few, dtype=np.int64)
    if isinstance(data, Columns):
        costs = np.ones(rows, dtype=np.int64)
        for values in data.values.values():
            if values.dtype.kind == "O":
                costs += np.fromiter((len(v) if isinstance(v, (str, bytes)) else 1 for v in values), np.int64, rows)
            elif values.dtype.kind in "US":
                costs += np.char.str_len(values)
        return costs
    if isinstance(data, np.ndarray):
        per_row = int(np.prod(data.shape[1:])) if data.ndim > 1 else 1
        return np.full(rows, max(per_row, 1), dtype=np.int64)
    if isinstance(data, pd.DataFrame):
        return row_costs(Columns({c: data[c].to_numpy() for c in data.columns}, len(data)))
    return np.ones(rows, dtype=np.int64)


def batch_slice_cost(tensor_shape, max_batch: int, slice_cost: int) -> int:
    """The batcher's cost bound for one batch: the limits' ``slice_cost``, or for a tensor model (its input's
    shape, ``-1`` first) at least ``max_batch`` whole rows. A tensor row costs its values (3,072 for a 3x32x32
    image), so the default 10,000 held three images a batch: the CNN then ran at batch 3, its costliest size
    per row."""
    row_shape = [int(s) for s in (tensor_shape or ())[1:]]
    if not row_shape or any(s < 1 for s in row_shape):
        return slice_cost
    return max(slice_cost, int(np.prod(row_shape)) * max_batch)


def _total(costs) -> int:
    """The sum of row costs (a few rows: in Python, cheaper than numpy's reduction)."""
    if costs.__class__ is list:
        return sum(costs)
    return sum(costs.tolist()) if len(costs) <= _FEW_ROWS else int(costs.sum())


def admit(data: Any, max_cost: int):
    """One request's row costs (an array; a :class:`Row`'s as a list of one), if their sum is within
    ``max_cost``; else :class:`TooCostly` (413)."""
    if data.__class__ is Row:
        costs, cost = [data.cost], data.cost
    else:
        costs = row_costs(data)
        cost = _total(costs)
    if cost > max_cost:
        raise TooCostly(f"the request costs {cost} units (rows x text characters, or tensor values); the limit "
                        f"is {max_cost} per request: send fewer rows or shorter text")
    return costs


def take(data: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of one request's input."""
    if isinstance(data, Columns):
        return data.take(start, stop)
    if isinstance(data, pd.DataFrame):
        return data.iloc[start:stop].reset_index(drop=True)
    return data[start:stop]


def merge(parts: list[Any], columns_ok: bool = False) -> Any:
    """Many requests' inputs -> one model input (Columns if the runtime takes them, a DataFrame, an array)."""
    first = parts[0]
    if isinstance(first, Columns):
        merged = first if len(parts) == 1 else Columns.concat(parts)
        return merged if columns_ok else merged.frame()
    if isinstance(first, np.ndarray):
        return first if len(parts) == 1 else np.concatenate(parts)
    if isinstance(first, pd.DataFrame):
        return first if len(parts) == 1 else pd.concat(parts, ignore_index=True)
    if isinstance(first, list):
        return [row for part in parts for row in part]
    raise TypeError(f"cannot batch inputs of type {type(first).__name__}")


def split(output: Any, sizes: list[int]) -> list[Any]:
    """One model output -> each request's rows, in order."""
    if len(sizes) == 1:
        return [output]
    bounds = list(itertools.accumulate(sizes, initial=0))  # plain ints: cheaper slices than numpy's
    return _split(output, list(zip(bounds[:-1], bounds[1:])), bounds[-1])


def _split(output: Any, spans: list[tuple[int, int]], total: int) -> list[Any]:
    if isinstance(output, dict):  # a dict of per-row arrays (an Answer, tensor models with several outputs)
        pieces = [_split(v, spans, total) for v in output.values()]
        kind, keys = type(output), list(output)
        out = [kind(zip(keys, row)) for row in zip(*pieces)] if pieces else [kind() for _ in spans]
        if kind is Answer and pieces:  # its MLflow records are made once for the batch (civicml.answers)
            for answer, (start, stop) in zip(out, spans):
                answer.part_of = (output, start, stop)
        return out
    if isinstance(output, (pd.DataFrame, pd.Series)):
        if len(output) != total:
            raise ValueError(f"the model returned {len(output)} rows for {total}")
        return [output.iloc[a:b].reset_index(drop=True) for a, b in spans]
    if isinstance(output, (np.ndarray, list)):
        if len(output) != total:
            raise ValueError(f"the model returned {len(output)} rows for {total}")
        if output.__class__ is np.ndarray and output.ndim and len(spans) == total:  # one row each (one-row
            return list(output.reshape(total, 1, *output.shape[1:]))  # requests): the same views, made in C
        return [output[a:b] for a, b in spans]
    raise TypeError(f"cannot split a model output of type {type(output).__name__}")


def join(pieces: list[Any]) -> Any:
    """One request's slices' outputs -> its whole output (the inverse of :func:`split`)."""
    if len(pieces) == 1:
        return pieces[0]
    first = pieces[0]
    if isinstance(first, dict):
        return type(first)({k: join([p[k] for p in pieces]) for k in first})
    if isinstance(first, (pd.DataFrame, pd.Series)):
        return pd.concat(pieces, ignore_index=True)
    if isinstance(first, np.ndarray):
        return np.concatenate(pieces)
    if isinstance(first, list):
        return [row for piece in pieces for row in piece]
    raise TypeError(f"cannot join model outputs of type {type(first).__name__}")
