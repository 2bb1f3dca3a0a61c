"""Monitoring wired into serving and the CLI: answer ids, recorded answers (masked), POST /feedback,
`civicml feedback`, `civicml monitor` and `civicml serve --record`, against a real registered model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.cli import main
from serving import Endpoint, create_app

pytest_plugins = ["explained_model"]  # one session fixture for every module that uses it
NAME = "explained-router"  # the model that fixture registers
ROW = {"description": "Huge pothole on Oak Avenue damaged my tire", "district": "Midtown", "channel": "app",
       "hour": 8, "weekday": 1}
PERSONAL = ("Jane Doe", "555-867-5309", "jane.doe@example.org")
SPOKEN = {**ROW, "description": "My name is Jane Doe, call 555-867-5309 or jane.doe@example.org: "
                                "a huge pothole on Oak Avenue"}
DISTRICTS = ("Northside", "Riverside", "Old Town", "Midtown")
RECORDED = 24  # rows answered by the recording server


def _hex32(value) -> bool:
    return isinstance(value, str) and len(value) == 32 and all(c in "0123456789abcdef" for c in value)


def _endpoint(explained_model) -> Endpoint:
    return Endpoint(NAME, alias="challenger", settings=explained_model.settings, refresh_seconds=0)


def test_every_answer_has_an_id_in_its_header_and_body(explained_model):
    rows = [ROW, {**ROW, "district": "Riverside"}]
    with TestClient(create_app(_endpoint(explained_model), follow=False)) as client:
        plain = client.post("/invocations", json={"dataframe_records": rows})
        again = client.post("/invocations", json={"dataframe_records": rows})
        v2 = client.post(f"/v2/models/{NAME}@challenger/infer", json={"inputs": [
            {"name": k, "datatype": "BYTES" if isinstance(v, str) else "INT64", "shape": [1], "data": [v]}
            for k, v in ROW.items()]})
        no_feedback = client.post("/feedback", json={"outcomes": [{"answer_id": "a" * 32, "outcome": "roads"}]})
    assert plain.status_code == 200, plain.text
    body, header = plain.json(), plain.headers["X-CivicML-Answer-Id"]
    assert plain.headers["X-CivicML-Model-Version"] == "1"  # beside the existing headers
    ids = body["answer_ids"]
    assert len(ids) == 2 and all(map(_hex32, ids)) and ids[0] == header and ids[0] != ids[1]
    assert ids[0][:24] == ids[1][:24] and ids[1].endswith("00000001")  # one request, its rows numbered
    assert again.headers["X-CivicML-Answer-Id"] not in ids  # a new id for every request
    assert {"label", "confidence", "band"} <= set(body["predictions"][0]) and "answer_id" not in body["predictions"][0]
    assert v2.status_code == 200, v2.text
    parameters = v2.json()["parameters"]
    assert parameters["answer_id"] == v2.headers["X-CivicML-Answer-Id"] == parameters["answer_ids"]
    assert _hex32(parameters["answer_id"])
    assert no_feedback.status_code == 404 and "records no answers" in no_feedback.json()["message"]


def test_the_data_planes_short_read_of_an_answer_gives_what_the_response_reads():
    """serving's ``answer_values`` (the label and top probability read without stacking the columns) against
    ``recorded_answer`` (civicml.answers' readers, as the MLflow body reads them)."""
    import numpy as np

    from civicml.answers import Answer
    from civicml.answers import mlflow_body
    from serving.inference import answer_values, body_values, recorded_answer
    from serving.protocols import Prediction

    def answer(labels, dtype=np.float64, probabilities=True):
        out = Answer(label=np.asarray(labels, dtype=object))
        if probabilities:
            rng = np.random.default_rng(len(labels))
            for name in ("roads", "water", "parks"):
                out[f"p_{name}"] = rng.random(len(labels)).astype(dtype)
        return out

    for output in (answer(["roads"]), answer(["roads", "water", "parks"]), answer(["roads"], np.float32),
                   answer(["water", "roads"], probabilities=False), Answer(label=np.asarray([3, 4]))):
        prediction = Prediction(output, None, None, [])
        assert answer_values(prediction) == recorded_answer(prediction), output
        # the record read from the MLflow body the caller got: the same label and confidence, where it has both
        body = mlflow_body(output, {"task": "classification"})
        read = body_values(body)
        if "p_roads" in output:
            labels, confidence = read
            assert labels == answer_values(prediction)[0]
            assert confidence == pytest.approx(answer_values(prediction)[1], rel=1e-6), output
        else:
            assert read == (None, None)  # no confidence in the body: the answer's own reading is used
    assert body_values({"predictions": [1.5, 2.5]}) == (None, None)
    assert body_values({"predictions": []}) == (None, None)


@pytest.fixture(scope="module")
def recorded(explained_model):
    """A server with a recorder (all answers) and a feedback sink, as `civicml serve --record all` builds them;
    ``RECORDED`` rows answered, personal data in one of them."""
    from app.cli.monitor import serving_recorder

    recorder, feedback = serving_recorder([NAME], "all", explained_model.settings)
    rows = [SPOKEN] + [{**ROW, "district": DISTRICTS[i % 4], "hour": i % 24} for i in range(1, RECORDED)]
    with TestClient(create_app(_endpoint(explained_model), follow=False, recorder=recorder,
                               feedback=feedback)) as client:
        answered = client.post("/invocations", json={"dataframe_records": rows})
        assert answered.status_code == 200, answered.text
        for recording in recorder.recorders.values():
            recording.flush()
        yield client, answered.json()
    recorder.close()  # closed twice (the server's shutdown did it first): harmless


def test_recorded_answers_land_in_the_store_masked(explained_model, recorded):
    from monitoring import open_store

    _, body = recorded
    store = open_store(settings=explained_model.settings)
    try:
        frame = store.read(model=NAME)
    finally:
        # closed before the file's bytes are read below: a process that opens and closes a database file
        # outside SQLite drops every SQLite lock it holds on it (POSIX locks are per process), and a later
        # process then takes itself for the last one and removes the shared-memory file under this one
        store.close()
    mine = frame[frame["answer_id"].isin(body["answer_ids"])].set_index("answer_id")
    assert len(mine) == RECORDED
    first = mine.loc[body["answer_ids"][0]]
    assert first["version"] == "1" and first["arm"] == "champion" and first["variant"] == "fp32"
    assert first["answer"] == body["predictions"][0]["label"]
    assert first["confidence"] == pytest.approx(body["predictions"][0]["confidence"])
    assert first["group"] == "Midtown" and first["latency_ms"] > 0
    assert "pothole" in first["inputs"]["description"]
    folder = explained_model.home / "monitoring"
    blob = b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())
    for value in PERSONAL:
        assert value.encode() not in blob, value


def test_post_feedback_joins_outcomes_to_answer_ids(recorded):
    client, body = recorded
    ids = body["answer_ids"]
    unknown = "f" * 32
    outcomes = {"outcomes": [{"answer_id": ids[0], "outcome": "roads"}, {"answer_id": ids[1], "outcome": "roads"},
                             {"answer_id": unknown, "outcome": "water"}]}
    first = client.post("/feedback", json=outcomes)
    assert first.status_code == 200, first.text
    assert first.json()["joined"] == 2 and first.json()["unknown_ids"] == [unknown]
    again = client.post("/feedback", json=outcomes).json()
    assert again["joined"] == 0 and again["already_known"] == 2 and again["unknown"] == 1
    for bad in ({"outcomes": []}, {"outcomes": [{"answer_id": ids[2]}]}, {"nothing": 1},
                {"outcomes": [{"answer_id": "not-an-id", "outcome": "roads"}]}):
        refused = client.post("/feedback", json=bad)
        assert refused.status_code == 400 and refused.json()["message"], bad
    assert client.post("/feedback", content=b"{not json", headers={"content-type": "application/json"}
                       ).status_code == 400


def _civicml(args: list[str], cwd: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CIVICML_"))}
    env["HOME"] = str(tmp_path / "fresh-home")
    civicml = Path(sys.executable).with_name("civicml")
    return subprocess.run([str(civicml), *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


def test_cli_feedback_and_monitor_in_fresh_processes_from_an_empty_folder(explained_model, recorded, tmp_path):
    _, body = recorded
    work = tmp_path / "empty"
    work.mkdir()
    ids = body["answer_ids"][10:14]
    unknown = "e" * 32
    (work / "outcomes.csv").write_text("answer_id,outcome,note\n" + "".join(f"{i},roads,x\n" for i in ids)
                                       + f"{unknown},water,y\n")
    home = str(explained_model.home)
    fed = _civicml(["feedback", NAME, "--file", "outcomes.csv", "--home", home, "--json"], work, tmp_path)
    assert fed.returncode == 0, fed.stderr[-2000:]
    counts = json.loads(fed.stdout)
    assert counts["joined"] == 4 and counts["unknown"] == 1 and counts["unknown_ids"] == [unknown]
    watched = _civicml(["monitor", NAME, "--window", "7d", "--json", "--home", home], work, tmp_path)
    assert watched.returncode == 0, watched.stderr[-2000:]
    report = json.loads(watched.stdout)
    assert report["model"] == NAME and report["window"] == "7d" and report["records"] >= RECORDED
    assert report["labelled"] >= 4 and "training sample" in report["reference"]
    assert {"drift", "quality", "alerts"} <= set(report)
    assert sorted(p.name for p in work.iterdir()) == ["outcomes.csv"]  # nothing written into the folder


def test_serve_refuses_a_bad_record_policy_in_one_line(explained_model, capsys):
    assert main(["serve", NAME, "--home", str(explained_model.home), "--record", "nonsense"]) == 2
    err = capsys.readouterr().err.strip()
    assert "record policy must be off, all or sample=R" in err and len(err.splitlines()) == 1


def test_team_mode_feedback_needs_a_service_token(explained_model, tmp_path):
    import yaml

    from app.cli.monitor import serving_recorder
    from civicml.access import new_token

    tokens = {who: new_token() for who in ("ana", "router")}
    access = tmp_path / "access.yaml"
    access.write_text(yaml.safe_dump({"principals": {
        "ana": {"roles": ["data_scientist"], "token_sha256": tokens["ana"][1]},
        "router": {"roles": ["service"], "token_sha256": tokens["router"][1]}}}))
    service = explained_model.settings.with_(access_file=access, token=tokens["router"][0])
    recorder, feedback = serving_recorder([NAME], "sample=0.5", service)
    endpoint = Endpoint(NAME, alias="challenger", settings=service, refresh_seconds=0)
    body = {"outcomes": [{"answer_id": "d" * 32, "outcome": "roads"}]}
    with TestClient(create_app(endpoint, follow=False, recorder=recorder, feedback=feedback)) as client:
        assert client.post("/feedback", json=body).status_code == 401
        wrong = client.post("/feedback", json=body, headers={"Authorization": f"Bearer {tokens['ana'][0]}"})
        assert wrong.status_code == 403 and "service role" in wrong.json()["message"]
        ok = client.post("/feedback", json=body, headers={"Authorization": f"Bearer {tokens['router'][0]}"})
    assert ok.status_code == 200 and ok.json()["unknown_ids"] == ["d" * 32], ok.text


def test_a_request_kept_as_its_bytes_gives_the_rows_its_parts_give(requests_use_case):
    """What the server keeps of an MLflow request (its bytes and the response's, ``keep_request``) is read back
    in the writer into the same masked rows as the request's parts (``record_answers``' tuple) give."""
    from monitoring.masking import RecordMasking
    from monitoring.recorder import RAW, masked_rows
    from serving.recorded import RecordedRequests

    rows = [SPOKEN, {**ROW, "district": "Harbor"}, {**ROW, "hour": 23}]
    body = json.dumps({"dataframe_records": rows}).encode()
    first = "ab" * 12 + "00000000"
    ids = [first[:24] + f"{i:08x}" for i in range(3)]
    response = json.dumps({"predictions": [{"label": "roads", "p_roads": 0.7, "confidence": 0.7},
                                           {"label": "water", "p_roads": 0.2, "confidence": 0.8},
                                           {"label": "parks", "p_roads": 0.1, "confidence": 0.6}],
                           "answer_ids": ids}).encode()
    masking = RecordMasking.for_use_case(requests_use_case)
    raw = (RAW, "router", "3", "fp32", "canary", first, 3, body, "application/json", response, 4.5, 1_700_000_000.0)
    columns = {name: [row[name] for row in rows] for name in rows[0]}
    parts = ("router", "3", "fp32", "canary", ids, columns, ["roads", "water", "parks"], [0.7, 0.8, 0.6], 4.5,
             1_700_000_000.0)
    read, failed = masked_rows([raw], masking, RecordedRequests)
    assert failed == 0 and read == masked_rows([parts], masking)[0] and len(read) == 3
    assert "[NAME]" in json.loads(read[0][7])["description"]
    assert masked_rows([raw], masking) == ([], 3)  # no reader: counted as failed, never raised


def test_requests_packed_as_bytes_read_back_as_given_and_are_stored(requests_use_case, tmp_path):
    """``record_request`` appends a request to one buffer of bytes (monitoring.packing): read back field for
    field as it was given, through a real writer process into the store, the same rows as the request's tuple
    gives; a full buffer drops and counts; a request it cannot pack (an id of another length) is kept anyway."""
    from monitoring.masking import RecordMasking
    from monitoring.packing import RAW, RequestBuffer, rows_of, unpack_requests
    from monitoring.recorder import Recording, masked_rows
    from monitoring.records import RecordStore
    from serving.inference import answer_ids
    from serving.recorded import RecordedRequests

    def request(i, rows=1, content_type="application/json"):
        first = answer_ids(rows)[0]
        inputs = [{**SPOKEN, "hour": i % 24}] * rows
        response = json.dumps({"predictions": [{"label": "roads", "confidence": 0.5 + i / 1e4}] * rows}).encode()
        return ("router", str(1 + i % 2), "fp32", "champion" if i % 3 else "canary", first, rows,
                json.dumps({"dataframe_records": inputs}).encode(), content_type, response, i / 7, 1.7e9 + i)

    given = [request(i, rows=1 + i % 3, content_type=None if i == 4 else "application/json") for i in range(40)]
    buffer = RequestBuffer(most_requests=10_000)
    assert all(buffer.add(r) is True for r in given)
    chunks, metas, leftovers = buffer.take()
    assert buffer.take() is None and len(chunks) == 1 and len(metas) == 2 * 2 and leftovers == []
    assert unpack_requests(chunks, metas) == [(RAW, *r) for r in given]
    assert rows_of(chunks) == sum(r[5] for r in given)
    full = RequestBuffer(most_requests=3)
    assert [full.add(r) for r in given[:4]] == [True, True, True, False]
    assert buffer.add(("router", "1", "fp32", "champion", "abc", 1, b"{}", None, b"{}", 1.0, 1.0)) is None

    class Typed(str):  # a content type marshal does not write: handed back, not lost
        pass

    lanes = RequestBuffer(most_requests=1_200)  # serving's way: a lane a version and arm, one call a request
    keep = lanes.lane("router", "2", "fp32", "canary")
    many = [request(i) for i in range(1_201)]
    many[7] = (*many[7][:7], Typed("application/json"), *many[7][8:])
    assert [keep(*r[4:9], None, *r[9:]) for r in many].count(False) == 1 and lanes.refused == 1  # full: refused
    chunks, metas, leftovers = lanes.take()
    assert len(chunks) == 3 and metas == [("router", "2", "fp32", "canary")]  # 512 a chunk
    kept = [("router", "2", "fp32", "canary", *r[4:]) for r in many[:1_200]]
    assert leftovers == [(RAW, *kept[7])] and rows_of(chunks) == 1_199
    assert unpack_requests(chunks, metas) == [(RAW, *r) for r in kept[:7] + kept[8:]]

    masking = RecordMasking.for_use_case(requests_use_case)
    store = RecordStore(f"sqlite:///{tmp_path / 'records.db'}")
    recording = Recording(store, "all", masking, process=True, reader=RecordedRequests, queue_size=10_000)
    for r in given:
        recording.record_request(r)
    recording.record_request(("router", "1", "fp32", "champion", "f" * 31, 1, *given[0][6:]))  # kept on the deque
    recording.close()
    expected, failed = masked_rows([(RAW, *r) for r in given], masking, RecordedRequests)
    assert failed == 0 and recording.stats()["written"] == len(expected) and recording.stats()["failed"] == 1
    frame = store.read().set_index("answer_id")
    assert sorted(frame.index) == sorted(row[0] for row in expected)  # not the id of another length (failed)
    for answer_id, model, version, variant, arm, when, group, inputs, answer, confidence, latency in expected:
        got = frame.loc[answer_id]
        assert (got["version"], got["arm"], got["time"], got["confidence"]) == (version, arm, when, confidence)
        assert got["inputs"] == json.loads(inputs) and "[NAME]" in got["inputs"]["description"]


def test_write_all_puts_every_chunk_through_a_pipe_in_order():
    """The recorder's thread writes packed requests from their list (os.writev, 1,024 at a time): through a
    pipe that holds far less than them, read on the other end by a thread, every byte arrives in order."""
    import random
    import threading

    from monitoring.record_writer import write_all

    rng = random.Random(3)
    chunks = [bytes([i % 251]) * rng.randint(0, 9000) for i in range(2_500)]
    read_fd, write_fd = os.pipe()
    got = []

    def drain():
        while part := os.read(read_fd, 1 << 16):
            got.append(part)

    reader = threading.Thread(target=drain)
    reader.start()
    write_all(write_fd, chunks)
    os.close(write_fd)
    reader.join(30)
    os.close(read_fd)
    assert b"".join(got) == b"".join(chunks)


def test_a_request_masking_cannot_read_is_counted_and_the_others_kept(requests_use_case):
    """Requests are masked together (RecordMasking.mask_many): one whose input breaks masking (a value whose
    text cannot be made) is counted as failed, and the requests around it, and a mapping between them, are kept."""
    from monitoring.masking import RecordMasking
    from monitoring.recorder import masked_rows
    from monitoring.records import new_answer_id

    class Unprintable:
        def __str__(self):
            raise ValueError("no text")

    def request(value):
        return ("router", "1", "fp32", "champion", [new_answer_id()], {"description": ["pothole"], "hour": [value]},
                ["roads"], [0.9], 1.0, 1.7e9)

    mapping = {"answer_id": new_answer_id(), "model": "router", "version": "1", "inputs": {"hour": 3},
               "answer": "roads"}
    masking = RecordMasking.for_use_case(requests_use_case)
    rows, failed = masked_rows([request(1), request(Unprintable()), request(2), mapping, request(3)], masking)
    assert failed == 1 and len(rows) == 4
    assert sorted(json.loads(r[7])["hour"] for r in rows) == [1, 2, 3, 3]
