"""How the recorder's writer reads back what serving kept of a request, the fast ways against the plain one:
one-row requests' JSON parsed together (``RecordedRequests.one_row_answers``), a one-row answer kept as its
label and confidence instead of the response's bytes, and a served one-row answer stored as the caller got it."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from serving import Endpoint, create_app

pytest_plugins = ["explained_model"]  # one session fixture for every module that uses it
NAME = "explained-router"  # the model that fixture registers
ROW = {"description": "Huge pothole on Oak Avenue damaged my tire", "district": "Midtown", "channel": "app",
       "hour": 8, "weekday": 1}
PERSONAL = ("Jane Doe", "555-867-5309", "jane.doe@example.org")
SPOKEN = {**ROW, "description": "My name is Jane Doe, call 555-867-5309 or jane.doe@example.org: a pothole"}


class OneByOne:
    """The reader serving hands the recorder, without its way of reading many requests at once."""

    def __init__(self, reader):
        self.columns, self.answers = reader.columns, reader.answers


def _requests():
    """``(RAW, ...)`` requests as the buffer gives them back, of every shape the writer meets, their ids fresh."""
    from monitoring.packing import RAW
    from serving.inference import answer_ids

    def one(row, label="roads", confidence=0.75, content_type="application/json", body=None):
        body = json.dumps({"dataframe_records": [row]}).encode() if body is None else body
        response = json.dumps({"predictions": [{"label": label, "p_roads": confidence, "confidence": confidence}],
                               "answer_ids": answer_ids(1)}).encode()
        return (RAW, "router", "3", "fp32", "champion", answer_ids(1)[0], 1, body, content_type, response, 2.5,
                1.7e9)

    rows = [ROW, SPOKEN, {**ROW, "hour": 23, "district": "Harbor"}, {**ROW, "description": "Ünïcode – 123 Elm St"},
            {"district": "Old Town", "hour": None, "weekday": 2.5, "channel": "phone", "extra": [1, 2]},
            {**ROW, "description": "write to a.b@example.org"}, {}]
    given = [one(row, label=f"l{i % 3}", confidence=0.5 + i / 100) for i, row in enumerate(rows)]
    given.append(one(ROW, content_type=None))  # MLflow's default: JSON
    given.append(one(ROW, content_type="application/json; charset=utf-8"))
    split = json.dumps({"dataframe_split": {"columns": list(ROW), "data": [list(ROW.values())]}}).encode()
    given.append(one(ROW, body=split))  # not the one-record shortcut: read on its own
    given.append(one(ROW, content_type="text/csv", body=b"description,district,channel,hour,weekday\n"
                                                          b"a pothole,Midtown,app,8,1\n"))
    first = answer_ids(2)[0]
    given.append((RAW, "router", "3", "fp32", "canary", first, 2, json.dumps({"dataframe_records": [ROW, SPOKEN]})
                  .encode(), "application/json", json.dumps({"predictions": [
                      {"label": "roads", "confidence": 0.6}, {"label": "water", "confidence": 0.7}]}).encode(), 1.0,
                  1.7e9))
    return given


def _labelled(item):
    """A one-row request as the server keeps it now: the answer's label and confidence, not its bytes."""
    answer = json.loads(item[9])["predictions"][0]
    return (*item[:9], answer["label"], item[10], item[11], answer["confidence"])


def test_requests_read_together_give_the_rows_read_one_by_one(requests_use_case):
    """One-row requests' JSON parsed as one array, and one-row answers kept as their label and confidence, give
    the same masked rows, in the same order, as every request read on its own by the codec; requests that are
    not one JSON record (MLflow's split frames, CSV, several rows) are read on their own in the batch."""
    from monitoring.masking import RecordMasking
    from monitoring.rows import masked_rows
    from serving.recorded import RecordedRequests

    masking = RecordMasking.for_use_case(requests_use_case)
    given = _requests()
    alone = [masked_rows([item], masking, OneByOne(RecordedRequests)) for item in given]
    assert all(failed == 0 for _, failed in alone)
    expected = [row for rows, _ in alone for row in rows]
    assert masked_rows(given, masking, RecordedRequests) == (expected, 0)
    labelled = [_labelled(item) if item[6] == 1 and item[8] != "text/csv" else item for item in given]
    assert sum(len(item) == 13 for item in labelled) == 10
    assert masked_rows(labelled, masking, RecordedRequests) == (expected, 0)
    assert masked_rows(labelled, masking, OneByOne(RecordedRequests)) == (expected, 0)
    for value in PERSONAL:
        assert all(value not in json.dumps(row) for row in expected), value
    read = RecordedRequests.one_row_answers([(item[7], item[8], item[9]) for item in given])
    assert [r is not None for r in read] == [True] * 9 + [False] * 3


def test_a_request_that_breaks_the_joined_reading_is_counted_and_the_others_kept(requests_use_case):
    """A body that is not JSON (no server would have answered it) makes the joined parse fail: every request
    is then read on its own, that one counted as failed and the rest kept as they would be."""
    from monitoring.masking import RecordMasking
    from monitoring.rows import masked_rows
    from serving.recorded import RecordedRequests

    masking = RecordMasking.for_use_case(requests_use_case)
    given = _requests()[:4]
    broken = (*given[1][:7], b'{"dataframe_records": [{"hour": 1}]}, {"x": ', *given[1][8:])
    rows, failed = masked_rows([given[0], broken, *given[2:]], masking, RecordedRequests)
    assert failed == 1 and rows == masked_rows([given[0], *given[2:]], masking, RecordedRequests)[0]
    assert RecordedRequests.one_row_answers([(broken[7], broken[8], broken[9])]) == [None]


def test_a_lane_keeps_a_one_row_answer_as_its_label_and_gives_it_back(requests_use_case):
    """``keep`` with a label and confidence in place of the response: marshalled, read back as a 13-field
    request, and written as the request with its response's bytes would be."""
    from monitoring.masking import RecordMasking
    from monitoring.packing import RequestBuffer, rows_of, unpack_requests
    from monitoring.rows import masked_rows
    from serving.recorded import RecordedRequests

    masking = RecordMasking.for_use_case(requests_use_case)
    given = [item for item in _requests() if item[6] == 1 and item[4] == "champion"]
    buffer = RequestBuffer(most_requests=100)
    keep = buffer.lane("router", "3", "fp32", "champion")
    for item in given:
        labelled = _labelled(item)
        assert keep(item[5], 1, item[7], item[8], labelled[9], labelled[12], item[10], item[11])
    chunks, metas, leftovers = buffer.take()
    assert leftovers == [] and rows_of(chunks) == len(given)
    back = unpack_requests(chunks, metas)
    assert back == [_labelled(item) for item in given]
    assert masked_rows(back, masking, RecordedRequests) == masked_rows(given, masking, RecordedRequests)


def test_served_one_row_answers_are_stored_as_the_caller_got_them(explained_model):
    """Through a real server with a recorder (``civicml serve --record all``'s): one-row requests, kept as
    their label and confidence, land in the store with the answer and confidence each caller got, masked."""
    from app.cli.monitor import serving_recorder
    from monitoring import open_store

    recorder, feedback = serving_recorder([NAME], "all", explained_model.settings)
    endpoint = Endpoint(NAME, alias="challenger", settings=explained_model.settings, refresh_seconds=0)
    bodies = {}
    with TestClient(create_app(endpoint, follow=False, recorder=recorder, feedback=feedback)) as client:
        districts = ("Harbor", "Midtown", "Old Town", "Riverside", "Harbor")
        for row in [SPOKEN] + [{**ROW, "hour": hour, "district": d} for hour, d in enumerate(districts)]:
            answered = client.post("/invocations", json={"dataframe_records": [row]})
            assert answered.status_code == 200, answered.text
            body = answered.json()
            bodies[body["answer_ids"][0]] = (body["predictions"][0], row)
        for recording in recorder.recorders.values():
            recording.flush()
    recorder.close()
    store = open_store(settings=explained_model.settings)
    try:
        frame = store.read(model=NAME).set_index("answer_id")
    finally:
        store.close()
    for answer_id, (prediction, row) in bodies.items():
        got = frame.loc[answer_id]
        assert got["answer"] == prediction["label"] and got["confidence"] == pytest.approx(prediction["confidence"])
        assert got["group"] == row["district"] and got["inputs"]["hour"] == row["hour"]
        for value in PERSONAL:
            assert value not in json.dumps(got["inputs"]), value
