"""How what a recorder kept becomes masked rows of the record store's table: requests given as their bytes
(read back by serving's reader), a request's answers as one tuple, or one mapping an answer; checked, masked
together (:meth:`monitoring.masking.RecordMasking.mask_many`) and shaped as tuples in
:data:`monitoring.records.ROW_COLUMNS`' order. Run by the recorder's writer process
(:mod:`monitoring.record_writer`) or its thread (:class:`monitoring.recorder.Recording`)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, Iterable

import orjson

from civicml.errors import InvalidInput
from monitoring.masking import RecordMasking, plain
from monitoring.packing import RAW
from monitoring.records import ARMS, ROW_COLUMNS, AnswerRecord, _row, is_answer_id


def masked_rows(items: Iterable[Any], masking: RecordMasking, reader=None) -> tuple[list, int]:
    """What a recorder was given (mappings, :class:`AnswerRecord` s, or a request's answers as one tuple,
    ``record_answers``' shape, or as its bytes, ``record_request``'s) as masked rows of the store's table (tuples
    in :data:`monitoring.records.ROW_COLUMNS`' order); and how many answers were malformed (counted, never
    raised into serving). Requests are read and checked one by one, then masked together
    (:meth:`RecordMasking.mask_many`)."""
    rows, failed, requests = [], 0, []
    items = items if isinstance(items, list) else list(items)
    read = _read_at_once(items, reader)
    for n, item in enumerate(items):
        try:
            if item.__class__ is tuple and item[0] == RAW:
                known = read[n] if read is not None else None
                requests.append(_checked(_read_request(item, reader)) if known is None else _checked_one(item, known))
                continue
            if isinstance(item, tuple):
                requests.append(_checked(item))
                continue
        except Exception:  # noqa: BLE001 - a malformed record is counted
            failed += _count(item)
            continue
        failed += _masked_requests(requests, masking, rows)
        requests = []
        try:
            record = AnswerRecord.of(item)
            inputs, group = masking.mask(record.inputs)
            row = _row(replace(record, inputs=inputs, group=group))
            rows.append(tuple(row[name] for name in ROW_COLUMNS))
        except Exception:  # noqa: BLE001
            failed += 1
    failed += _masked_requests(requests, masking, rows)
    return rows, failed


def _masked_requests(requests: list[tuple], masking: RecordMasking, rows: list) -> int:
    """Checked requests' rows appended to ``rows``, masked together; where that fails, one request at a time,
    so that one bad request is counted (the rows it held: returned) and the others are kept."""
    try:
        rows.extend(_request_rows(requests, masking))
        return 0
    except Exception:  # noqa: BLE001 - a value masking cannot read: found below
        failed = 0
        for request in requests:
            try:
                rows.extend(_request_rows([request], masking))
            except Exception:  # noqa: BLE001
                failed += len(request[0])
        return failed


def _count(item: Any) -> int:
    """How many answered rows an item given to a recorder holds."""
    if item.__class__ is tuple and item and item[0] == RAW:
        return item[6] if isinstance(item[6], int) else 1
    return len(item[4]) if isinstance(item, tuple) and isinstance(item[4], (list, tuple)) else 1


def _read_at_once(items: list, reader) -> list | None:
    """For each item, its ``(inputs, label, confidence)`` where it is a one-row request given as bytes that
    the reader reads together with the others (``one_row_answers``: their JSON parsed at once), else None (read
    one by one, :func:`_read_request`); None when the reader cannot or nothing is such a request."""
    read_all = getattr(reader, "one_row_answers", None)
    if read_all is None:
        return None
    at = [n for n, item in enumerate(items) if item.__class__ is tuple and len(item) in (12, 13) and item[0] == RAW
          and item[6] == 1 and item[7].__class__ is bytes
          and item[9].__class__ is (bytes if len(item) == 12 else str)]
    if not at:
        return None
    try:  # a label given (13 fields): only the request's body is read
        answers = read_all([(items[n][7], items[n][8], items[n][9] if len(items[n]) == 12 else None) for n in at])
    except Exception:  # noqa: BLE001 - each request is then read on its own, and a bad one counted there
        return None
    read = [None] * len(items)
    for n, answer in zip(at, answers):
        item = items[n]
        read[n] = answer if answer is None or len(item) == 12 else (answer[0], item[9], item[12])
    return read


def _checked_one(item: tuple, known: tuple) -> tuple:
    """A one-row request given as bytes whose ``(inputs, label, confidence)`` the reader read already, as
    :func:`_checked` gives a request (checked alike; its inputs the row as it came)."""
    _, model, version, variant, arm, first, _, _, _, _, latency_ms, when = item[:12]
    _check(arm, [first])
    inputs, label, confidence = known
    return ([first], str(model), str(version), str(variant), arm, float(when),
            None if latency_ms is None else float(latency_ms), [inputs], [label], [confidence])


def _read_request(item: tuple, reader) -> tuple:
    """A request given as its bytes (``record_request``: ``(RAW, model, version, variant, arm, first_id, rows,
    request body, content type, response body, latency_ms, time)``, or a one-row answer's label in place of the
    response body and its confidence after the time: :func:`monitoring.packing.unpack_requests`) as
    :func:`_checked` reads a request:
    its input columns and each row's answer and confidence read back by ``reader`` (``columns(body,
    content_type)``, ``answers(response)``: what serving gives, the codec that read the request and the body
    the caller got), its ids those serving gave (the first's 24 hex digits, then the row number)."""
    if reader is None:
        raise InvalidInput("answer record: a request given as bytes needs its protocol's reader")
    _, model, version, variant, arm, first, rows, body, content_type, response, latency_ms, when = item[:12]
    ids = [first] if rows == 1 else [f"{first[:24]}{i:08x}" for i in range(rows)]
    # 13 fields: a one-row answer's label and confidence as the server gave them, no response to read
    values, confidence = ([str(response)], [item[12]]) if len(item) == 13 else reader.answers(response)
    return (model, version, variant, arm, ids, reader.columns(body, content_type), values, confidence, latency_ms,
            when)


def _checked(item: tuple) -> tuple:
    """A request's answers, ``(model, version, variant, arm, answer_ids, input_columns, answers, confidences,
    latency_ms, time)`` (``input_columns``: column -> a value per row, or None), checked (the ids' shape, the
    arm) and its fields as the store keeps them, with each row's inputs: what :func:`_request_rows` masks."""
    model, version, variant, arm, ids, columns, answers, confidences, latency_ms, when = item
    _check(arm, ids)
    if columns is None:
        inputs = [{} for _ in ids]
    elif len(ids) == 1:
        inputs = [{name: values[0] for name, values in columns.items()}]
    else:
        inputs = [{name: values[i] for name, values in columns.items()} for i in range(len(ids))]
    return (ids, str(model), str(version), str(variant), arm, float(when),
            None if latency_ms is None else float(latency_ms), inputs, answers, confidences)


def _check(arm: Any, ids: list) -> None:
    """:class:`InvalidInput` for an arm that is not one of :data:`ARMS` or an id that is not 32 hex digits."""
    if arm not in ARMS:
        raise InvalidInput(f"answer record: arm must be one of {', '.join(ARMS)}, got {arm!r}")
    for answer_id in ids:
        if not is_answer_id(answer_id):
            raise InvalidInput(f"answer record: answer_id must be 32 hex characters, got {answer_id!r}")


def _request_rows(requests: list[tuple], masking: RecordMasking) -> list[tuple]:
    """Checked requests (:func:`_checked`) as masked rows, tuples in :data:`monitoring.records.ROW_COLUMNS`'
    order, every row's inputs masked in one call: no :class:`AnswerRecord` nor dict built per row."""
    if not requests:
        return []
    masked = iter(masking.mask_many([inputs for request in requests for inputs in request[7]]))
    rows = []
    for ids, model, version, variant, arm, when, latency_ms, _, answers, confidences in requests:
        answered, confident = len(answers), 0 if confidences is None else len(confidences)
        for i, answer_id in enumerate(ids):
            inputs, group = next(masked)
            confidence = confidences[i] if i < confident else None
            rows.append((answer_id, model, version, variant, arm, when, group, _sorted_json(inputs),
                         _json(plain(answers[i] if i < answered else None)),
                         None if confidence is None else float(confidence), latency_ms))
    return rows


_SORTED = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def _sorted_json(value: dict) -> str:
    """``value`` as JSON text with sorted keys, by orjson (0.15 us against json's 3.7 for a 311 request's
    inputs); by json where orjson refuses a value (an integer past 64 bits)."""
    try:
        return orjson.dumps(value, option=_SORTED).decode()
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(value, sort_keys=True)


def _json(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(value)


def rows_in(items: list) -> int:
    """How many answered rows a batch holds (a request's tuple holds one per answer id)."""
    return sum(_count(i) for i in items)
