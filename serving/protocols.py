"""The two protocols a server speaks, each only as its bodies: MLflow's scoring protocol (``/invocations``)
and the Open Inference Protocol V2 (``/v2/models/{name}/infer``).

A protocol decodes a request body with its codec (serving/codecs.py), encodes an answer, and says an
error in its own shape (serving/errors.py); everything between (the caller's token, body limits,
validation, batching, counting) is the data plane's (serving/inference.py), the same for both.
"""

from __future__ import annotations

import abc
from functools import cached_property
from dataclasses import dataclass, field
from typing import Any

from civicml.answers import stable_answer, v2_metadata_outputs
from civicml.errors import InvalidInput, Unavailable
from serving.codecs import MLflowCodec, V2Codec, v2_datatype
from serving.endpoint import Endpoint
from serving.errors import Json, mlflow_error, v2_error
from serving.limits import OFF_LOOP_BYTES, decode_body, decoded_now


@dataclass
class Decoded:
    """A request as a protocol read it: the model's input, its ``params``, what else the body asked (V2: the
    request id and the outputs wanted) and, for MLflow's, the content type it was read as (a recorder keeps it
    beside the body's bytes)."""

    payload: Any
    params: dict | None
    meta: dict = field(default_factory=dict)
    content_type: str | None = None


@dataclass
class Prediction:
    """The model's output for a decoded request, who answered, and the values it saw outside its training
    range (the data plane's out-of-range warnings)."""

    output: Any
    served: Any
    loaded: Any
    warnings: list[dict]
    answer_ids: list[str] = field(default_factory=list)  # one per row (serving.inference.answer_ids)

    @cached_property
    def answer(self):
        """The output in the one answer shape (:func:`civicml.answers.stable_answer`), shaped once for the
        response and the recorder."""
        return stable_answer(self.output, metadata=self.loaded.runtime.metadata or {})


class Protocol(abc.ABC):
    name: str  # the ``protocol`` label of the server's metrics

    @abc.abstractmethod
    async def decode(self, endpoint: Endpoint, body: bytes, headers) -> Decoded:
        """The request body as the model's input (a CivicML input error when it is not one)."""

    def decode_now(self, endpoint: Endpoint, body: bytes, headers) -> Decoded | None:
        """:meth:`decode` of a body under ``OFF_LOOP_BYTES`` (serving/limits.py), here and now, without a
        coroutine of its own (the data plane's hot path); None: this protocol has no such way (use decode)."""
        return None

    @abc.abstractmethod
    def encode(self, endpoint: Endpoint, request: Decoded, prediction: Prediction) -> dict:
        """The answer's body."""

    @abc.abstractmethod
    def error(self, err: Exception) -> Json:
        """An error's response, in this protocol's shape."""


class MLflowProtocol(Protocol):
    name = "mlflow"

    async def decode(self, endpoint: Endpoint, body: bytes, headers) -> Decoded:
        arguments = self._arguments(endpoint, headers)
        payload, params = await decode_body(MLflowCodec.decode, body, *arguments)
        return Decoded(payload, params, {}, arguments[0])  # positional: no keyword dict a request

    def decode_now(self, endpoint: Endpoint, body: bytes, headers) -> Decoded | None:
        if len(body) >= OFF_LOOP_BYTES:
            return None
        arguments = self._arguments(endpoint, headers)
        payload, params = decoded_now(MLflowCodec.decode, body, *arguments)
        return Decoded(payload, params, {}, arguments[0])  # positional: no keyword dict a request

    @staticmethod
    def _arguments(endpoint: Endpoint, headers) -> tuple:
        """The codec's arguments beside the body: the content type, and a float tensor model's dtype (its nested
        JSON may be read in one pass)."""
        loaded = endpoint.current
        dtype = loaded.validator.tensor_spec.type if loaded and loaded.validator.tensor else None
        return headers.get("content-type"), dtype if dtype is not None and dtype.kind == "f" else None

    def encode(self, endpoint: Endpoint, request: Decoded, prediction: Prediction) -> dict:
        body = {**MLflowCodec.body(prediction.output, prediction.loaded.runtime.metadata),
                "model": prediction.served.to_dict()}
        if prediction.answer_ids:  # beside the predictions: their records keep their keys
            body["answer_ids"] = prediction.answer_ids
        if prediction.warnings:  # answered, but outside what the model saw (out_of_range: warn)
            body["warnings"] = prediction.warnings
        return body

    def error(self, err: Exception) -> Json:
        return mlflow_error(err)


class V2Protocol(Protocol):
    name = "v2"

    async def decode(self, endpoint: Endpoint, body: bytes, headers) -> Decoded:
        loaded = endpoint.current
        return self._decoded(endpoint, loaded, await decode_body(V2Codec.decode, body,
                                                                 *self._arguments(loaded, headers)))

    def decode_now(self, endpoint: Endpoint, body: bytes, headers) -> Decoded | None:
        if len(body) >= OFF_LOOP_BYTES:
            return None
        loaded = endpoint.current
        return self._decoded(endpoint, loaded, decoded_now(V2Codec.decode, body, *self._arguments(loaded, headers)))

    @staticmethod
    def _arguments(loaded, headers) -> tuple:
        return (headers.get("content-type"), bool(loaded and loaded.validator.tensor),
                headers.get("inference-header-content-length"), loaded.validator.kinds if loaded else None)

    @staticmethod
    def _decoded(endpoint: Endpoint, loaded, decoded: tuple) -> Decoded:
        payload, params, meta = decoded
        if loaded is not None and meta.get("outputs"):  # unknown requested outputs: refused before the model
            check_outputs(meta, [o["name"] for o in v2_metadata(endpoint)["outputs"]])
        return Decoded(payload, params, meta)

    def encode(self, endpoint: Endpoint, request: Decoded, prediction: Prediction) -> dict:
        answer = prediction.answer
        check_outputs(request.meta, list(answer))
        parameters = served_parameters(prediction.served)
        if prediction.warnings:
            parameters["warnings"] = "; ".join(w["message"] for w in prediction.warnings)
        if prediction.answer_ids:  # V2 parameters are scalars: the first row's id, and every row's, comma-joined
            parameters["answer_id"] = prediction.answer_ids[0]
            parameters["answer_ids"] = ",".join(prediction.answer_ids)
        return V2Codec.encode(answer, endpoint.key, prediction.served.version, request.meta, parameters)

    def error(self, err: Exception) -> Json:
        return v2_error(err)


MLFLOW = MLflowProtocol()
V2 = V2Protocol()


def v2_metadata(endpoint: Endpoint) -> dict:
    """The V2 model metadata of what ``endpoint`` serves now: its inputs and outputs and who answers."""
    loaded = endpoint.current
    if loaded is None:
        raise Unavailable(f"model '{endpoint.key}' is not loaded: {endpoint.last_error or 'loading'}")
    validator = loaded.validator
    if validator.tensor:
        spec = validator.tensor_spec
        inputs = [{"name": spec.name or "input", "datatype": v2_datatype(spec.type), "shape": list(spec.shape)}]
    else:
        inputs = [{"name": c["name"], "datatype": v2_datatype(c["datatype"]), "shape": [-1],
                   **({"parameters": {k: c[k] for k in ("range", "allowed") if k in c}}
                      if "range" in c or "allowed" in c else {})} for c in validator.describe()]
    meta = loaded.runtime.metadata or {}
    outputs = v2_metadata_outputs(meta)
    return {"name": endpoint.key, "versions": [loaded.served.version], "platform": "civicml",
            "inputs": inputs, "outputs": outputs,
            "parameters": {**served_parameters(loaded.served), "task": meta.get("task"),
                           "use_case": meta.get("use_case")}}


def check_outputs(meta: dict, known: list[str]) -> None:
    """A V2 request's ``outputs`` must name outputs the model has (400 naming the others)."""
    wanted = meta.get("outputs") or []
    unknown = [str(name) for name in wanted if name not in known]
    if known and unknown:
        raise InvalidInput(f"unknown requested outputs: {', '.join(unknown)} (the model's outputs: "
                           f"{', '.join(known)})")


def served_parameters(served) -> dict[str, str]:
    """What a V2 answer's ``parameters`` say about who answered: alias, runtime, variant and its parent."""
    return {k: v for k, v in served.to_dict().items() if k not in ("name", "version")}


__all__ = ["MLFLOW", "V2", "Decoded", "MLflowProtocol", "Prediction", "Protocol", "V2Protocol", "check_outputs",
           "served_parameters", "v2_metadata"]
