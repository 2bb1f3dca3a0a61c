"""How a recorder reads back the requests serving's data plane kept as bytes (:meth:`DataPlane.keep_request
<serving.inference.DataPlane.keep_request>`): with the codec that read them and from the bodies the callers got.
Handed to ``monitoring.recorder_for`` by the top floor (monitoring imports no serving) and pickled by reference
into the recorder's writer process, where it runs."""

from __future__ import annotations

import orjson

from serving.codecs import MLflowCodec, _media_type, loads
from serving.dataplane import UnsupportedMediaType
from serving.inference import body_values, input_columns


class RecordedRequests:
    """How a recorder reads back what :meth:`DataPlane.keep_request` gave it: the request's input columns
    as the MLflow codec reads them (the same function the server decoded it with) and each row's label and
    confidence from the body the caller got (:func:`body_values`). Handed to ``monitoring.recorder_for`` by
    the top floor and pickled by reference into the recorder's writer process, where it runs."""

    @staticmethod
    def columns(body: bytes, content_type: str | None) -> dict | None:
        """The request's input columns, as the codec reads them (a one-record body at once)."""
        payload, _ = MLflowCodec.decode(body, content_type)
        return input_columns(payload)

    @staticmethod
    def answers(response: bytes) -> tuple[list | None, list | None]:
        return body_values(loads(response))

    @staticmethod
    def one_row_answers(requests: list[tuple[bytes, str | None, bytes | None]]) -> list[tuple | None]:
        """Many one-row requests ``(body, content type, response)`` read back at once: for each, ``(inputs,
        label, confidence)`` where the body is MLflow's one record (``{"dataframe_records": [{...}]}``, the
        codec's own shortcut: the inputs are that record, as :meth:`columns` gives them) and the response a
        classifier's one record (a response None: not read, label and confidence None: the caller has them),
        else None (:meth:`columns` and :meth:`answers` read that one). The JSON bodies are parsed as arrays,
        one ``orjson.loads`` for the requests and one for the responses (the server parsed each request and
        wrote each response, so joined they parse; if not, every request is left to the one-by-one reading)."""
        out: list[tuple | None] = [None] * len(requests)
        at = [i for i, (_, content_type, _) in enumerate(requests) if _is_json(content_type)]
        answered = [i for i in at if requests[i][2] is not None]
        try:
            bodies = orjson.loads(b"[" + b",".join([requests[i][0] for i in at]) + b"]") if at else []
            answers = orjson.loads(b"[" + b",".join([requests[i][2] for i in answered]) + b"]") if answered else []
        except orjson.JSONDecodeError:
            return out
        if len(bodies) != len(at) or len(answers) != len(answered):
            return out
        answer_of = dict(zip(answered, answers))
        for i, doc in zip(at, bodies):
            if doc.__class__ is not dict or len(doc) != 1:
                continue
            records = doc.get("dataframe_records")
            if records.__class__ is not list or len(records) != 1 or records[0].__class__ is not dict:
                continue
            if requests[i][2] is None:
                out[i] = (records[0], None, None)
                continue
            answer = answer_of[i]
            predictions = answer.get("predictions") if answer.__class__ is dict else None
            if predictions.__class__ is list and len(predictions) == 1:
                first = predictions[0]
                if first.__class__ is dict and "label" in first and "confidence" in first:
                    out[i] = (records[0], str(first["label"]), first["confidence"])
        return out


def _is_json(content_type: str | None) -> bool:
    """Whether the codec reads a body of this content type as JSON (a type it refuses: False)."""
    try:
        return _media_type(content_type) == "application/json"
    except UnsupportedMediaType:
        return False
