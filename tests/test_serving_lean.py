"""The serving hot path's leaner pieces give what the long way round gives (issue 26, item 4, CivicML's own
work per request): each is checked here against the library call it stands in for, in milliseconds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from serving.batches import Columns, frame_of


def _objects(values: list) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


_COLUMN_SETS = [
    {"description": _objects(["Huge pothole on Oak Avenue", "Ruído na rua"]), "district": _objects(["Midtown", "X"]),
     "hour": np.asarray([8, 23]), "weekday": np.asarray([1, 6], dtype=np.int32)},
    {"x": np.asarray([0.5, np.nan]), "flag": np.asarray([True, False]), "small": np.asarray([1, 2], dtype=np.uint8),
     "f32": np.asarray([1.5, -2.0], dtype=np.float32)},
    {"mixed": _objects([1, "x"]), "n": np.arange(2)},  # not all text: pandas' own way
    {"missing": _objects(["x", None]), "nan": _objects([np.nan, "y"])},
    {"unicode": np.asarray(["x", "y"]), "dates": np.asarray(["2024-01-01", "2024-01-02"], dtype="datetime64[ns]")},
    {1: np.arange(2), "a": _objects(["p", "q"])},  # a label that is not text
]


@pytest.mark.parametrize("values", _COLUMN_SETS)
def test_a_batchs_frame_is_the_one_pandas_makes(values):
    rows = len(next(iter(values.values())))
    made, expected = Columns(values, rows).frame(), pd.DataFrame(values, copy=False)
    pd.testing.assert_frame_equal(made, expected, check_exact=True)
    assert list(made.dtypes) == list(expected.dtypes) and made.columns.dtype == expected.columns.dtype
    assert made._mgr.nblocks == expected._mgr.nblocks and type(made.index) is type(expected.index)
    for name, array in values.items():  # numbers are handed over without a copy, as pandas hands them over
        assert np.shares_memory(made[name].to_numpy(), array) == np.shares_memory(expected[name].to_numpy(), array)


def test_the_lean_frame_is_used_for_checked_text_and_numbers_and_labels_are_not_shared():
    values = _COLUMN_SETS[0]
    assert frame_of.ok  # this environment's pandas: the lean way agrees with pandas' own
    assert frame_of._make(values, 2) is not None and frame_of._make(_COLUMN_SETS[2], 2) is None
    first, second = frame_of(values, 2), frame_of(values, 2)
    first.columns.name = "renamed by a model"  # one frame's labels changed by the model: not the next one's
    assert second.columns.name is None and frame_of(values, 2).columns.name is None
    for make in (frame_of, lambda v, rows: pd.DataFrame(v, copy=False)):  # a model's write reaches the arrays
        copied = {name: array.copy() for name, array in values.items()}  # as it does through pandas' own frame
        make(copied, 2).loc[0, "hour"] = 99
        assert copied["hour"].tolist() == [99, 23]
