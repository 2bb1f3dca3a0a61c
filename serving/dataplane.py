"""A protocol-neutral data plane: parse MLflow's scoring protocol, check inputs, format outputs.

Requests accepted on ``/invocations`` (as ``mlflow models serve`` does):
``{"dataframe_split": {"columns": [...], "data": [[...]]}}``,
``{"dataframe_records": [{...}]}``, ``{"instances": [...]}``, ``{"inputs": ...}``
(each optionally with ``"params"``), and ``text/csv`` bodies.

Inputs are checked against the model's signature and the categories logged with
it; every problem is an :class:`~civicml.errors.InvalidInput` naming the field.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from civicml.errors import InvalidInput

MAX_ROWS = 10_000
MAX_TEXT = 10_000  # characters in one string field
FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")


@dataclass
class InferenceRequest:
    data: Any  # DataFrame for column signatures, ndarray or dict of ndarrays for tensors
    params: dict | None = None


def parse(body: bytes, content_type: str | None) -> tuple[Any, dict | None]:
    """Raw HTTP body -> (payload, params), before any schema is applied."""
    ctype = (content_type or "application/json").split(";")[0].strip().lower()
    if not body or not body.strip():
        raise InvalidInput("empty request body")
    if ctype == "text/csv":
        try:
            return pd.read_csv(io.BytesIO(body)), None
        except (ValueError, pd.errors.ParserError) as err:
            raise InvalidInput(f"malformed CSV: {err}") from None
    if ctype != "application/json":
        raise InvalidInput(f"unsupported content type '{ctype}' (use application/json or text/csv)")
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InvalidInput(f"malformed JSON: {err}") from None
    if not isinstance(doc, dict):
        raise InvalidInput(f"the JSON body must be an object with one of the keys {', '.join(FORMATS)}")
    keys = [k for k in FORMATS if k in doc]
    if len(keys) != 1:
        raise InvalidInput(f"the JSON body must have exactly one of the keys {', '.join(FORMATS)}"
                           f" (got {', '.join(sorted(doc)) or 'none'})")
    params = doc.get("params")
    if params is not None and not isinstance(params, dict):
        raise InvalidInput("'params' must be an object")
    key = keys[0]
    value = doc[key]
    try:
        if key == "dataframe_split":
            if not isinstance(value, dict) or "data" not in value:
                raise InvalidInput("'dataframe_split' needs 'columns' and 'data'")
            frame = pd.DataFrame(value["data"], columns=value.get("columns"))
        elif key == "dataframe_records":
            if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
                raise InvalidInput("'dataframe_records' must be a list of objects")
            frame = pd.DataFrame.from_records(value)
        elif key == "instances":
            if not isinstance(value, list):
                raise InvalidInput("'instances' must be a list")
            if value and all(isinstance(r, dict) for r in value):
                frame = pd.DataFrame.from_records(value)
            else:
                return value, params
        else:
            if isinstance(value, dict) and all(isinstance(v, list) for v in value.values()):
                frame = pd.DataFrame(value)
            else:
                return value, params
    except InvalidInput:
        raise
    except (ValueError, TypeError) as err:
        raise InvalidInput(f"malformed '{key}': {err}") from None
    return frame, params


def _column_frame(payload: Any) -> pd.DataFrame:
    if isinstance(payload, pd.DataFrame):
        return payload
    if isinstance(payload, list) and payload and not isinstance(payload[0], (list, dict)):
        return pd.DataFrame({0: payload})
    raise InvalidInput("this model takes named columns: send dataframe_split, dataframe_records or CSV")


def check_columns(frame: pd.DataFrame, signature, metadata: dict) -> pd.DataFrame:
    """Keep and order the signature's columns, cast them, and check categories."""
    if len(frame) == 0:
        raise InvalidInput("the request has no rows")
    if len(frame) > MAX_ROWS:
        raise InvalidInput(f"too many rows: {len(frame)} (at most {MAX_ROWS} per request)")
    inputs = signature.inputs if signature is not None else None
    if inputs is None:
        return frame
    categories = (metadata or {}).get("categories") or {}
    out = {}
    for spec in inputs.inputs:
        name = spec.name
        if name not in frame.columns:
            if getattr(spec, "required", True):
                raise InvalidInput(f"missing column '{name}' (the model needs: {', '.join(inputs.input_names())})")
            continue
        # Plain Python over the values: a request holds few rows, and per-column pandas calls cost
        # more than the model for one row (bench/bench_serving.py).
        values = frame[name].tolist()
        kind = str(spec.type).removeprefix("DataType.")
        if kind in _NUMERIC:
            out[name] = np.asarray(_numbers(name, values, whole=kind in ("long", "integer")), dtype=_NUMERIC[kind])
        elif kind == "string":
            _check_texts(name, values, categories.get(name))
            out[name] = pd.Series(values, dtype=object)
        else:
            for row, value in enumerate(values):
                if _missing(value):
                    raise InvalidInput(f"column '{name}' has a missing value in row {row}")
            out[name] = frame[name]
    return pd.DataFrame(out)


_NUMERIC = {"long": "int64", "integer": "int32", "double": "float64", "float": "float32"}


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _numbers(name: str, values: list, whole: bool) -> list:
    out = []
    for row, value in enumerate(values):
        if _missing(value):
            raise InvalidInput(f"column '{name}' has a missing value in row {row}")
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number, str)):
            raise InvalidInput(f"column '{name}' must be numeric, got {value!r}")
        try:
            number = float(value)
        except ValueError:
            raise InvalidInput(f"column '{name}' must be numeric, got {value!r}") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise InvalidInput(f"column '{name}' must be a finite number, got {value!r}")
        if whole:
            if not number.is_integer():
                raise InvalidInput(f"column '{name}' must hold whole numbers, got {value!r}")
            number = int(number)
        out.append(number)
    return out


def _check_texts(name: str, values: list, allowed) -> None:
    allowed_set = set(allowed) if allowed else None
    for row, value in enumerate(values):
        if _missing(value):
            raise InvalidInput(f"column '{name}' has a missing value in row {row}")
        if not isinstance(value, str):
            raise InvalidInput(f"column '{name}' must be text, got {value!r}")
        if not value.strip():
            raise InvalidInput(f"column '{name}' has an empty value in row {row}")
        if len(value) > MAX_TEXT:
            raise InvalidInput(f"column '{name}' has a value longer than {MAX_TEXT} characters")
        if allowed_set is not None and value not in allowed_set:
            raise InvalidInput(f"unknown {name} {value!r} (known: {', '.join(map(str, allowed))})")


def check_tensor(payload: Any, signature) -> Any:
    spec = signature.inputs.inputs[0]
    try:
        array = np.asarray(payload, dtype=spec.type)
    except (ValueError, TypeError):
        raise InvalidInput(f"the input must be a numeric array of {spec.type}") from None
    shape = spec.shape
    if array.ndim != len(shape) or any(s not in (-1, None) and s != a for s, a in zip(shape, array.shape)):
        raise InvalidInput(f"the input must have shape {tuple(shape)} (-1 = any), got {array.shape}")
    if array.shape[0] > MAX_ROWS:
        raise InvalidInput(f"too many rows: {array.shape[0]} (at most {MAX_ROWS} per request)")
    return array


def prepare(payload: Any, params: dict | None, signature, metadata: dict) -> InferenceRequest:
    if signature is not None and signature.inputs is not None and signature.inputs.is_tensor_spec():
        if isinstance(payload, pd.DataFrame):
            raise InvalidInput("this model takes a tensor: send 'instances' or 'inputs' with a nested list")
        return InferenceRequest(check_tensor(payload, signature), params)
    return InferenceRequest(check_columns(_column_frame(payload), signature, metadata), params)


def to_json(output: Any) -> Any:
    """Predictions as JSON-ready values, in MLflow's response shape (a list, row by row)."""
    if isinstance(output, pd.DataFrame):
        return json.loads(output.to_json(orient="records"))
    if isinstance(output, pd.Series):
        return json.loads(output.to_json(orient="values"))
    if isinstance(output, np.ndarray):
        return output.tolist()
    if isinstance(output, dict):
        return {k: to_json(v) for k, v in output.items()}
    return output
