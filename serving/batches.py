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
        return pd.DataFrame(self.values, copy=False)

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
