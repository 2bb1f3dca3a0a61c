"""Protocol codecs: bytes on the wire <-> a protocol-neutral payload, and answers -> response bodies.

* :class:`MLflowCodec`: MLflow's scoring protocol on ``/invocations`` (``dataframe_split``,
  ``dataframe_records``, ``instances``, ``inputs``, each with optional ``params``; ``text/csv``).
* :class:`V2Codec`: the Open Inference Protocol V2 (KServe, Triton, MLServer) ``infer`` request and
  response, with BYTES tensors for strings.

Codecs know nothing about models' schemas: validation lives in serving/dataplane.py, and the answer's one
shape (labels, probabilities, confidence, intervals, the V2 output tensors) in civicml/answers.py. JSON is parsed
and written with orjson (it refuses nesting deeper than 1024 levels, so no RecursionError).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import orjson
import pandas as pd

from civicml.answers import Answer, json_rows, mlflow_body, stable_answer, v2_outputs  # noqa: F401 (re-exported)
from civicml.errors import InvalidInput
from serving.dataplane import Table, UnsupportedMediaType, all_finite, all_within, table_of_frame
from serving.json_tensors import nested_floats, typed_floats

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")


def loads(body: bytes) -> Any:
    if not body or body.isspace():  # bytes.isspace: the ASCII white space bytes.strip() strips, without a copy
        raise InvalidInput("empty request body")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise InvalidInput(f"malformed JSON: {err}") from None


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS, default=_default)


def _default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError


_MEDIA_TYPES: dict[str | None, str] = {}  # Content-Type headers seen -> their media type (accepted ones only)


def _media_type(content_type: str | None) -> str:
    """The media type of a ``Content-Type`` header, as MLflow's scoring server reads it: parameters other
    than ``charset`` are refused (415), and so is any charset but UTF-8 (bodies are read as UTF-8).
    Accepted headers are remembered (at most 64): clients send the same one on every request."""
    known = _MEDIA_TYPES.get(content_type)
    if known is not None:
        return known
    media = _parse_media_type(content_type)
    if len(_MEDIA_TYPES) < 64:
        _MEDIA_TYPES[content_type] = media
    return media


def _parse_media_type(content_type: str | None) -> str:
    media, *parameters = [part.strip() for part in (content_type or "application/json").split(";")]
    names = []
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        name, value = name.strip().lower(), value.strip().strip('"').lower()
        if name == "charset":
            if value not in ("utf-8", "utf8"):
                raise UnsupportedMediaType(f"unsupported charset '{value}': the scoring server reads UTF-8 only")
        elif name or value:
            names.append(name or parameter)
    if names:
        raise UnsupportedMediaType(f"unrecognized content type parameters: {', '.join(names)} (only charset=utf-8)")
    return media.lower()


def _csv_table(body: bytes) -> Table:
    """A CSV body (UTF-8, a header line naming the columns) -> its columns; a name twice is refused."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InvalidInput(f"the CSV body is not UTF-8 text: {err}") from None
    try:
        header = pd.read_csv(io.BytesIO(body), header=None, nrows=1, dtype=str, keep_default_na=False)
        names = [str(n) for n in header.iloc[0].tolist()] if len(header) else []
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise InvalidInput(f"the CSV header names a column twice: {', '.join(repr(d) for d in dupes)}")
        return table_of_frame(pd.read_csv(io.BytesIO(body)))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InvalidInput(f"malformed CSV: {err}") from None
    except InvalidInput:
        raise
    except ValueError as err:
        raise InvalidInput(f"malformed CSV: {err}") from None


def _column_names(columns: Any, width: int) -> list[str]:
    if columns is None:
        return list(range(width))
    if not isinstance(columns, list) or not all(isinstance(c, (str, int)) and not isinstance(c, bool)
                                                for c in columns):
        raise InvalidInput("'dataframe_split' columns must be a list of names (strings)")
    if len(set(columns)) != len(columns):
        dupes = sorted({str(c) for c in columns if columns.count(c) > 1})
        raise InvalidInput(f"'dataframe_split' has duplicate columns: {', '.join(dupes)}")
    return columns


def _split_table(value: Any) -> Table:
    if not isinstance(value, dict) or "data" not in value:
        raise InvalidInput("'dataframe_split' needs 'columns' and 'data'")
    data = value["data"]
    if not isinstance(data, list) or not all(isinstance(r, list) for r in data):
        raise InvalidInput("'dataframe_split' data must be a list of rows (lists)")
    width = len(data[0]) if data else len(value.get("columns") or [])
    names = _column_names(value.get("columns"), width)
    for i, row in enumerate(data):
        if len(row) != len(names):
            raise InvalidInput(f"'dataframe_split' row {i} has {len(row)} values for {len(names)} columns")
    return Table({name: [row[j] for row in data] for j, name in enumerate(names)}, len(data))


def _records_table(value: Any, key: str) -> Table:
    if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
        raise InvalidInput(f"'{key}' must be a list of objects")
    if len(value) == 1:  # one record (most requests): its own columns, without a comprehension per column
        return Table({name: [v] for name, v in value[0].items()}, 1)
    names: dict = {}
    for record in value:
        for name in record:
            names.setdefault(name, None)
    return Table({name: [r.get(name) for r in value] for name in names}, len(value))


class MLflowCodec:
    """MLflow's scoring protocol, unchanged for clients."""

    name = "mlflow"

    @staticmethod
    def decode(body: bytes, content_type: str | None, tensor_dtype: Any = None) -> tuple[Any, dict | None]:
        """``tensor_dtype``: the model takes a tensor of this numpy float type, so a body that is only a nested
        array of numbers may be read straight into such an array (:mod:`serving.json_tensors`; the values
        a list would have given the model), and any other body is parsed here as ever."""
        ctype = _media_type(content_type)
        if ctype == "text/csv":
            if not body or not body.strip():
                raise InvalidInput("empty request body")
            return _csv_table(body), None
        if ctype != "application/json":
            raise UnsupportedMediaType(f"unsupported content type '{ctype}' (use application/json or text/csv)")
        if tensor_dtype is not None:
            tensor = nested_floats(body, np.float32 if tensor_dtype == np.float32 else np.float64)
            if tensor is not None:
                return tensor, None
        doc = loads(body)
        if doc.__class__ is dict and len(doc) == 1:  # one record, no params (most requests): as below, at once
            records = doc.get("dataframe_records")
            if records.__class__ is list and len(records) == 1 and records[0].__class__ is dict:
                return Table({name: [v] for name, v in records[0].items()}, 1), None
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
        if key == "dataframe_split":
            return _split_table(value), params
        if key == "dataframe_records":
            return _records_table(value, key), params
        if key == "instances":
            if not isinstance(value, list):
                raise InvalidInput("'instances' must be a list")
            if value and all(isinstance(r, dict) for r in value):
                return _records_table(value, key), params
            return value, params
        if isinstance(value, dict) and value and all(isinstance(v, list) for v in value.values()):
            lengths = {len(v) for v in value.values()}
            if len(lengths) != 1:
                raise InvalidInput("'inputs' columns must all have the same length")
            return Table(dict(value), lengths.pop()), params
        return value, params

    @staticmethod
    def encode(output: Any) -> Any:
        """Predictions as JSON-ready values, in MLflow's response shape (a list, row by row); a classifier's
        records with its confidence (:func:`civicml.answers.mlflow_body`)."""
        return mlflow_body(output)["predictions"]

    @staticmethod
    def body(output: Any, metadata: dict | None) -> dict:
        """The response body's answer keys: ``predictions``, and for a regressor with an interval in its
        ``metadata`` ``intervals``, ``coverage`` and ``unit`` beside them."""
        return mlflow_body(output, metadata)


to_json = json_rows


# -- Open Inference Protocol V2 --------------------------------------------------------------------
V2_DATATYPES = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
                "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
                "FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "BYTES": object}
_MLFLOW_TO_V2 = {"long": "INT64", "integer": "INT32", "double": "FP64", "float": "FP32", "string": "BYTES",
                 "boolean": "BOOL", "binary": "BYTES", "float32": "FP32", "float64": "FP64", "int64": "INT64",
                 "int32": "INT32", "uint8": "UINT8", "bool": "BOOL", "str": "BYTES", "object": "BYTES"}


def v2_datatype(kind: Any) -> str:
    return _MLFLOW_TO_V2.get(str(kind).removeprefix("DataType.").lower(), "BYTES")


def _v2_values(tensor: dict) -> list:
    datatype = tensor.get("datatype")
    if not isinstance(datatype, str) or datatype not in V2_DATATYPES:
        raise InvalidInput(f"input '{tensor.get('name')}' has an unknown datatype {datatype!r}")
    data = tensor.get("data")
    if isinstance(data, np.ndarray):  # binary data, checked when read
        return data
    if not isinstance(data, list):
        raise InvalidInput(f"input '{tensor.get('name')}' needs 'data' as a list")
    flat = _flatten(data)
    _check_datatype(str(tensor.get("name")), datatype, flat)
    return flat


def _integer_range(datatype: str) -> tuple[int, int] | None:
    if datatype.startswith("UINT") or datatype.startswith("INT"):
        info = np.iinfo(V2_DATATYPES[datatype])
        return int(info.min), int(info.max)
    return None


def _check_datatype(name: str, datatype: str, flat: list) -> None:
    """Each value fits its V2 datatype: strings for BYTES, true/false for BOOL, whole numbers within the
    type's range for INT*/UINT* (UINT8 0..255, ...), finite numbers within range for FP*."""
    if datatype == "BYTES":
        if not all(isinstance(v, str) for v in flat):
            raise InvalidInput(f"input '{name}' is BYTES: its data must be strings")
        return
    if datatype == "BOOL":
        if not all(isinstance(v, bool) for v in flat):
            raise InvalidInput(f"input '{name}' is BOOL: its data must be true/false")
        return
    bounds = _integer_range(datatype)
    if bounds is not None:
        if not all(v.__class__ is int for v in flat):
            raise InvalidInput(f"input '{name}' is {datatype}: its data must be whole numbers")
        low, high = bounds
        bad = next((v for v in flat if not low <= v <= high), None)
        if bad is not None:
            raise InvalidInput(f"input '{name}' is {datatype}: {bad} is outside {low}..{high}")
        return
    if not all(v.__class__ in (int, float) for v in flat):
        raise InvalidInput(f"input '{name}' is {datatype}: its data must be numbers")
    top = float(np.finfo(V2_DATATYPES[datatype]).max)
    bad = next((v for v in flat if not -top <= v <= top), None)  # also NaN
    if bad is not None:
        raise InvalidInput(f"input '{name}' is {datatype}: {bad} is not a finite {datatype} number")


_NUMERIC_KINDS = {"long", "integer", "double", "float"}


def _check_column_datatype(name: str, datatype: str, kind: str | None) -> None:
    """A V2 input's datatype fits the model's column: no BYTES for a numeric or boolean column."""
    if kind is None or datatype != "BYTES":
        return
    if kind in _NUMERIC_KINDS or kind == "boolean":
        raise InvalidInput(f"input '{name}' is BYTES, but the model's column '{name}' is {kind}: send "
                           f"{v2_datatype(kind)}")


_V2_RESERVED = {"binary_data_output", "sequence_id", "sequence_start", "sequence_end", "priority", "timeout"}
# MLServer's request-level content types: how the inputs are to be read. A column model reads them as a
# table ("pd"), a tensor model as one array ("np"); either is honoured, anything else refused.
_V2_CONTENT_TYPES = {False: ("pd",), True: ("np",)}


def _from_binary(tensor: dict, raw: bytes) -> list | np.ndarray:
    """An input's values from its raw bytes: a numpy array (native byte order) for numbers and BOOL, checked
    as JSON data would be (a BOOL byte is 0 or 1, a float finite); a list of strings for BYTES."""
    datatype = tensor.get("datatype")
    if not isinstance(datatype, str) or datatype not in V2_DATATYPES:
        raise InvalidInput(f"input '{tensor.get('name')}' has an unknown datatype {datatype!r}")
    if datatype != "BYTES":
        dtype = np.dtype(V2_DATATYPES[datatype]).newbyteorder("<")
        if len(raw) % dtype.itemsize:
            raise InvalidInput(f"input '{tensor.get('name')}' has {len(raw)} bytes, not a multiple of {dtype.itemsize}")
        if datatype == "BOOL" and raw and max(raw) > 1:
            raise InvalidInput(f"input '{tensor.get('name')}' is BOOL: its bytes must be 0 or 1")
        values = np.frombuffer(bytearray(raw), dtype=dtype)  # bytearray: a writable copy, made holding the GIL
        if not dtype.isnative:
            values = values.astype(dtype.newbyteorder("="))
        if datatype.startswith("FP") and not all_finite(values):
            raise InvalidInput(f"input '{tensor.get('name')}' is {datatype}: its data must be finite numbers")
        return values
    out, at = [], 0
    while at < len(raw):  # each element: 4-byte little-endian length, then the bytes
        if at + 4 > len(raw):
            raise InvalidInput(f"input '{tensor.get('name')}' has truncated BYTES data")
        size = int.from_bytes(raw[at:at + 4], "little")
        at += 4
        if at + size > len(raw):
            raise InvalidInput(f"input '{tensor.get('name')}' has truncated BYTES data")
        try:
            out.append(raw[at:at + size].decode("utf-8"))
        except UnicodeDecodeError:
            raise InvalidInput(f"input '{tensor.get('name')}' has BYTES that are not UTF-8 text") from None
        at += size
    return out


def _flatten(data: list) -> list:
    if not data or not isinstance(data[0], list):
        return data
    out: list = []
    stack = [data]
    while stack:  # iterative: no recursion on deep input
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            out.append(item)
    return out


def _shape(tensor: dict) -> list[int]:
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not shape or not all(s.__class__ is int and s >= 0 for s in shape):
        raise InvalidInput(f"input '{tensor.get('name')}' needs a 'shape': a non-empty list of non-negative "
                           f"integers")
    return shape


def _split_binary(body: bytes, content_type: str | None, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON header, binary tensor data): the binary extension splits at ``Inference-Header-Content-Length``;
    without it the body is JSON alone."""
    if header_length is None:
        ctype = _media_type(content_type)
        if ctype != "application/json":
            raise UnsupportedMediaType(f"unsupported content type '{ctype}' (use application/json, or the "
                                       f"binary extension with Inference-Header-Content-Length)")
        return body, b""
    try:
        size = int(header_length)
    except ValueError:
        raise InvalidInput("invalid Inference-Header-Content-Length header") from None
    if not 0 < size <= len(body):
        raise InvalidInput("Inference-Header-Content-Length is outside the body")
    return body[:size], body[size:]


def _v2_params(params: Any, tensor_model: bool) -> dict | None:
    if params is not None and not isinstance(params, dict):
        raise InvalidInput("'parameters' must be an object")
    params = {k: v for k, v in (params or {}).items() if k not in _V2_RESERVED} or None
    if params and "content_type" in params:
        wanted = params.pop("content_type")
        if not isinstance(wanted, str) or wanted not in _V2_CONTENT_TYPES[tensor_model]:
            raise InvalidInput(f"parameters.content_type {wanted!r} is not supported for this model (use "
                               f"{' or '.join(map(repr, _V2_CONTENT_TYPES[tensor_model]))})")
        params = params or None
    return params


def _attach_binary(tensors: list, binary: bytes) -> None:
    """Each input's values from its slice of the binary data (``parameters.binary_data_size``)."""
    offset = 0
    for tensor in tensors:
        if isinstance(tensor, dict) and isinstance(tensor.get("parameters"), dict) \
                and "binary_data_size" in tensor["parameters"]:
            size = tensor["parameters"]["binary_data_size"]
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise InvalidInput(f"input '{tensor.get('name')}' has a wrong binary_data_size")
            tensor["data"] = _from_binary(tensor, binary[offset:offset + size])
            offset += size
    if offset != len(binary):
        raise InvalidInput("the binary data does not match the inputs' binary_data_size")


def _tensor_input(tensors: list[dict]) -> np.ndarray:
    if len(tensors) != 1:
        raise InvalidInput("this model takes one input tensor")
    tensor = tensors[0]
    shape = _shape(tensor)
    values = _numbers(tensor)
    if values is None:
        values = _v2_values(tensor)
    size = 1
    for n in shape:
        size *= n
    if size != len(values):
        raise InvalidInput(f"input '{tensor['name']}' has {len(values)} values for shape {shape}")
    return np.asarray(values, dtype=object if tensor["datatype"] == "BYTES"
                      else V2_DATATYPES[tensor["datatype"]]).reshape(shape)


def _numbers(tensor: dict) -> np.ndarray | None:
    """A numeric tensor's values as one array without a Python check per value (an image is thousands):
    binary data as it came, flat JSON data when every value is a JSON number within the datatype's range.
    None when that cannot be said at once (nested or mixed data, a value out of range): :func:`_v2_values`
    then checks value by value and names the first bad one."""
    data, datatype = tensor.get("data"), tensor.get("datatype")
    if isinstance(data, np.ndarray):  # from the binary extension or read in one pass, checked there
        return data.reshape(-1)
    if not isinstance(data, list) or datatype not in _NUMBER_TYPES or (data and data[0].__class__ is list):
        return None
    kinds = set(map(type, data))
    if kinds - _NUMBER_TYPES[datatype]:
        return None
    if datatype.startswith("FP"):  # JSON numbers are finite doubles: one beyond FP32's range becomes inf here
        with np.errstate(over="ignore"):
            values = np.asarray(data, dtype=V2_DATATYPES[datatype])
        return values if all_finite(values) else None
    try:
        values = np.asarray(data, dtype=np.int64)
    except OverflowError:  # a whole number beyond int64: named by the slow path
        return None
    low, high = _integer_range(datatype)
    return values.astype(V2_DATATYPES[datatype]) if all_within(values, low, high) else None


_NUMBER_TYPES = {name: ({int, float} if name.startswith("FP") else {int}) for name in V2_DATATYPES
                 if name not in ("BYTES", "BOOL", "UINT64")}


def _column_inputs(tensors: list[dict], kinds: dict[str, str]) -> Table:
    columns, rows = {}, None
    for tensor in tensors:
        shape = _shape(tensor)
        if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
            raise InvalidInput(f"input '{tensor['name']}' must have shape [N] or [N, 1], got {shape}")
        _check_column_datatype(tensor["name"], tensor.get("datatype"), kinds.get(tensor["name"]))
        values = _v2_values(tensor)
        if isinstance(values, np.ndarray):  # binary data: a column's values are Python values
            values = values.tolist()
        if len(values) != shape[0]:
            raise InvalidInput(f"input '{tensor['name']}' has {len(values)} values for shape {shape}")
        if rows is not None and shape[0] != rows:
            raise InvalidInput("all V2 inputs must have the same number of rows")
        rows = shape[0]
        columns[tensor["name"]] = values
    return Table(columns, rows or 0)


class V2Codec:
    """The V2 ``infer`` request/response (JSON); one input tensor per column, or one tensor for tensor models."""

    name = "v2"

    @staticmethod
    def decode(body: bytes, content_type: str | None, tensor_model: bool,
               header_length: str | None = None, kinds: dict[str, str] | None = None) -> tuple[Any, dict | None, dict]:
        """A V2 infer request, JSON or with the binary tensor data extension (what Triton's clients send
        by default: ``Inference-Header-Content-Length`` JSON bytes, then each input's raw bytes)."""
        body, binary = _split_binary(body, content_type, header_length)
        doc = (typed_floats(body) if tensor_model and header_length is None else None) or loads(body)
        if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
            raise InvalidInput("a V2 infer request needs 'inputs': a list of tensors")
        params = _v2_params(doc.get("parameters"), tensor_model)
        outputs = doc.get("outputs")
        if outputs is not None and not isinstance(outputs, list):
            raise InvalidInput("'outputs' must be a list of {\"name\": ...} objects")
        meta = {"id": doc.get("id") if isinstance(doc.get("id"), str) else None,
                "outputs": [o.get("name") for o in outputs or [] if isinstance(o, dict)]}
        _attach_binary(doc["inputs"], binary)
        tensors = doc["inputs"]
        if not all(isinstance(t, dict) and isinstance(t.get("name"), str) for t in tensors):
            raise InvalidInput("every V2 input needs a 'name'")
        names = [t["name"] for t in tensors]
        if len(set(names)) != len(names):
            raise InvalidInput("duplicate V2 input names")
        if tensor_model:
            return _tensor_input(tensors), params, meta
        return _column_inputs(tensors, kinds or {}), params, meta

    @staticmethod
    def encode(answer: dict[str, Any], model_name: str, version: str, request_meta: dict,
               parameters: dict[str, Any] | None = None) -> dict:
        """A stable answer (name -> per-row values) -> a V2 infer response; ``parameters`` (e.g. the variant
        kind and parent version that answered) go into the response's ``parameters`` object."""
        outputs = v2_outputs(answer, request_meta.get("outputs"))
        body = {"model_name": model_name, "model_version": version, "outputs": outputs}
        if parameters:
            body["parameters"] = parameters
        if request_meta.get("id"):
            body["id"] = request_meta["id"]
        return body
