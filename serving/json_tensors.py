"""MLflow's nested ``instances`` (or ``inputs``) of a float tensor model, read straight into one array.

An image in MLflow's JSON is 3,072 numbers in 1,000-odd nested lists (62.6 kB for the street-scenes CNN).
Through orjson they became 3,072 Python floats and those lists, then numpy walked the lists again to
find the shape and fill a float32 array: about 0.15 ms a request, a fifth of the server's CPU per image
outside the network (py-spy at c32), and the lists fed the garbage collector's young generation. Here
one compiled pass (serving/_json_kernel.py, numba) checks the JSON, finds the shape and writes the
numbers: the doubles Python's ``float()`` (so orjson) gives for the same text, or those rounded to
float32 as numpy rounds a Python float. The answers are the same, byte for byte. Only bodies that are exactly ``{"instances": <array of arrays of numbers>}`` are
read here, and anything the pass is not sure of (bad JSON, a ragged array, an unusual number) returns
None: the codec then parses the body as before, and answers it (or refuses it) as before. A V2 JSON
request's one FP32/FP64 input is read the same way (:func:`typed_floats`): its ``data`` in the pass, the
small rest of the document by orjson.

The kernel is compiled (or loaded from numba's cache) in a background thread on the first such request,
so that neither importing serving nor starting a server waits for numba; until it is ready the general
path answers.
"""

from __future__ import annotations

import logging
import re
import threading

import numpy as np
import orjson

from serving.dataplane import all_finite

log = logging.getLogger(__name__)

_PREFIX = re.compile(rb'[ \t\r\n]*\{[ \t\r\n]*"(?:instances|inputs)"[ \t\r\n]*:[ \t\r\n]*\[')
_JSON_SPACE = b" \t\r\n"
_state: dict = {"kernel": None, "thread": None}
_lock = threading.Lock()


def nested_floats(body: bytes, dtype=np.float64) -> np.ndarray | None:
    """The body's tensor as an array of ``dtype`` (float32 or float64: each double rounded as numpy rounds
    a Python float; its shape the nesting's), or None: not this body's form, not certain here, or the
    kernel not ready yet (the caller then parses the body as before). float32 when the model takes it:
    numpy's cast of a whole image lets go of the GIL, and the event loop then waited to get it back."""
    kernel = _state["kernel"]
    if kernel is None:
        _start()
        return None
    found = _PREFIX.match(body) if body.__class__ is bytes else None  # bytes: the type the kernel is compiled for
    if found is None:
        return None
    read = _array(kernel, body, found.end() - 1, dtype, 2)
    if read is None or body[read[1]:].strip(_JSON_SPACE) != b"}":
        return None
    return read[0]


def array_at(body: bytes, start: int, dtype) -> tuple[np.ndarray, int] | None:
    """The JSON array of numbers (nested or flat) at ``body[start] == '['`` as an array of ``dtype``, and
    the offset just past it; None where :func:`nested_floats` would say None."""
    kernel = _state["kernel"]
    if kernel is None:
        _start()
        return None
    return _array(kernel, body, start, dtype, 1) if body.__class__ is bytes else None


def _array(kernel, body: bytes, start: int, dtype, min_depth: int) -> tuple[np.ndarray, int] | None:
    for capacity in (len(body) // 4 + 16, len(body) // 2 + 2):  # a value needs two bytes at least
        status, read = _read(kernel, body, start, np.empty(capacity, dtype=dtype), min_depth)
        if status != kernel[2]:  # not FULL
            return read
    return None


def _read(kernel, body: bytes, start: int, out: np.ndarray, min_depth: int) -> tuple[int, tuple | None]:
    parse, ok, _, max_depth = kernel
    work = np.empty(2 * (max_depth + 2), dtype=np.int64)
    status, count, ndim, end = parse(np.frombuffer(body, dtype=np.uint8), start, out, work, min_depth)
    if status != ok:
        return status, None
    return status, (out[:count].reshape(tuple(work[1:ndim + 1].tolist())), end)


_DATA_KEY = re.compile(rb'"data"[ \t\r\n]*:[ \t\r\n]*\[')
_FLOAT_TYPES = {"FP32": np.float32, "FP64": np.float64}


def typed_floats(body: bytes) -> dict | None:
    """A V2 JSON request whose one input is FP32 or FP64 ``data``: that array read in one pass
    (:func:`array_at`: the values numpy made of the list), the rest of the document
    by orjson, as binary data would be. None for anything else, or anything not certain (a second
    ``"data"``, a value beyond FP32): the body is then parsed as a whole, as before."""
    at = body.find(b'"data"')
    found = _DATA_KEY.match(body, at) if at >= 0 and body.find(b'"data"', at + 6) < 0 else None
    if found is None:
        return None
    dtype = np.float32 if b'"FP32"' in body else np.float64
    read = array_at(body, found.end() - 1, dtype)
    if read is None:
        return None
    values, end = read
    try:
        doc = orjson.loads(body[:found.end() - 1] + b"null" + body[end:])
    except orjson.JSONDecodeError:
        return None
    inputs = doc.get("inputs") if isinstance(doc, dict) else None
    if not (isinstance(inputs, list) and len(inputs) == 1 and isinstance(inputs[0], dict)
            and "data" in inputs[0] and inputs[0]["data"] is None
            and _FLOAT_TYPES.get(inputs[0].get("datatype")) is dtype and all_finite(values)):
        return None
    inputs[0]["data"] = values.reshape(-1)
    return doc


def ready(wait: float = 0.0) -> bool:
    """Whether the kernel is in use; ``wait`` seconds at most for it (tests, benchmarks), starting it."""
    _start()
    thread = _state["thread"]
    if wait and thread is not None:
        thread.join(wait)
    return _state["kernel"] is not None


def _start() -> None:
    if _state["thread"] is not None:
        return
    with _lock:
        if _state["thread"] is None:
            _state["thread"] = threading.Thread(target=_load, name="civicml-json-kernel", daemon=True)
            _state["thread"].start()


def _load() -> None:
    try:
        from serving import _json_kernel as k

        kernel = (k.parse_nested, k.OK, k.FULL, k.MAX_DEPTH)
        sample = b'{"instances": [[0.5, 1]]}'
        for dtype in (np.float32, np.float64):  # compiled for the types used above
            if _read(kernel, sample, sample.index(b"["), np.empty(8, dtype=dtype), 2)[1] is None:
                raise RuntimeError("the JSON kernel did not read its sample")
        _state["kernel"] = kernel
    except Exception as err:  # noqa: BLE001 - numba missing or failing: the general path answers
        log.info("nested JSON tensors are read by the general path: %s: %s", type(err).__name__, err)
