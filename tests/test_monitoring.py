"""Served answers recorded on purpose (policy, masking, store, size cap, recorder) and late labels joined to
them (idempotent, unknown ids reported, the CSV read strictly); one contract suite for SQLite and PostgreSQL."""

from __future__ import annotations

import ast
import json
import time
from pathlib import Path

import pytest

from civicml.errors import InvalidInput, NotFound
from monitoring import (AnswerRecord, Recorder, RecordMasking, RecordPolicy, Recording, RecordStore, add_feedback,
                        new_answer_id, open_store, read_outcomes, recorder_for)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = RecordStore(f"sqlite:///{tmp_path / 'records.db'}")
    else:
        from conftest import fresh_postgres_database

        with fresh_postgres_database("civicml_monitoring") as url:
            s = RecordStore(url)
            yield s
            s.close()
        return
    yield s
    s.close()


def _record(answer="roads", confidence=0.9, group="Riverside", t=None, **inputs):
    return AnswerRecord(answer_id=new_answer_id(), model="service-requests-router", version="3",
                        inputs=inputs or {"description": "pothole on Main St", "district": group},
                        answer=answer, confidence=confidence, latency_ms=3.5, group=group,
                        time=time.time() if t is None else t)


# -- the policy ----------------------------------------------------------------------------------
def test_record_policy_parses_off_all_and_a_sample_rate():
    assert RecordPolicy.parse("off").mode == "off" and RecordPolicy.parse(None).mode == "off"
    assert RecordPolicy.parse(" ALL ").wants(new_answer_id())
    sample = RecordPolicy.parse("sample=0.1")
    assert (sample.mode, sample.rate, str(sample)) == ("sample", 0.1, "sample=0.1")
    ids = [new_answer_id() for _ in range(4000)]
    kept = [i for i in ids if sample.wants(i)]
    assert 250 < len(kept) < 550  # about 10%
    assert kept == [i for i in ids if RecordPolicy.parse("sample=0.1").wants(i)]  # decided by the id alone
    assert not RecordPolicy.parse("off").wants(ids[0])


@pytest.mark.parametrize("bad", ["sample=0", "sample=1.5", "sample=abc", "sample=", "some", "sample=nan", "10%"])
def test_a_bad_record_policy_is_one_clear_line(bad):
    with pytest.raises(InvalidInput, match="off, all or sample=R|0 < R <= 1") as err:
        RecordPolicy.parse(bad)
    assert "\n" not in str(err.value)


# -- the store (SQLite and PostgreSQL) -------------------------------------------------------------
def test_records_are_written_once_and_read_back_with_their_fields(store):
    first, second = _record(), _record(answer="water", confidence=0.4, group="Harbor")
    assert store.write([first, second]) == 2
    assert store.write([first]) == 0  # an id already stored is kept as it was
    frame = store.read(model="service-requests-router")
    assert list(frame["answer_id"]) == [first.answer_id, second.answer_id]
    row = frame.iloc[1]
    assert (row["answer"], row["confidence"], row["group"], row["version"], row["arm"]) == \
        ("water", 0.4, "Harbor", "3", "champion")
    assert row["inputs"]["description"] == "pothole on Main St" and row["outcome"] is None
    assert store.read(model="another").empty
    assert len(store.read(since=second.time)) == 1
    assert store.latest_time("service-requests-router") == store.latest_time() == frame["time"].max()
    assert store.latest_time("another") is None


def test_feedback_joins_outcomes_idempotently_and_names_unknown_ids(store):
    records = [_record() for _ in range(3)]
    store.write(records)
    stranger = new_answer_id()
    pairs = [(records[0].answer_id, "roads"), (records[1].answer_id, "water"), (stranger, "parks")]
    result = add_feedback(store, pairs)
    assert (result.joined, result.already_known, result.unknown_ids) == (2, 0, (stranger,))
    again = add_feedback(store, [(i.upper(), o) for i, o in pairs])  # ids are read case-insensitively
    assert (again.joined, again.already_known, again.unknown) == (0, 2, 1)
    conflict = add_feedback(store, [(records[0].answer_id, "parks"), (records[2].answer_id, "noise")])
    assert (conflict.joined, conflict.conflicting_ids) == (1, (records[0].answer_id,))
    outcomes = dict(zip(*store.read()[["answer_id", "outcome"]].to_dict(orient="list").values()))
    assert outcomes == {records[0].answer_id: "roads", records[1].answer_id: "water",
                        records[2].answer_id: "noise"}
    assert stranger in again.text()


def test_numeric_outcomes_are_stored_as_numbers_where_the_answer_was_one(store):
    flow = _record(answer=412.5, confidence=None)
    store.write([flow])
    add_feedback(store, [(flow.answer_id, "398")])
    assert store.read().iloc[0]["outcome"] == 398.0


# -- masking -------------------------------------------------------------------------------------
RAW = {"description": "Pothole on Elm Street. My name is Maria Lopez, call (555) 201-3344 or "
                      "maria.lopez7@mail.example.org", "district": "Riverside", "channel": "web", "hour": 9,
       "weekday": 2, "name": "Dmitri Petrov", "phone": "555-777-1234", "email": "dmitri.p@mail.example.org",
       "reporter_name": "Dmitri Petrov"}
SECRETS = ["Maria", "Lopez", "555", "201-3344", "maria.lopez7", "mail.example.org", "Dmitri", "Petrov", "777-1234",
           "dmitri.p"]


def test_the_use_case_masking_keeps_features_and_masks_text(requests_use_case):
    masking = RecordMasking.for_use_case(requests_use_case)
    assert masking.group == "district"  # the policy's report_by
    masked, group = masking.mask({**RAW, "description": "Dmitri Petrov says the drain is blocked"})
    assert group == "Riverside"
    assert set(masked) == {"description", "district", "channel", "hour", "weekday"}
    assert masked["description"] == "[NAME] says the drain is blocked"  # the caller's own name, seeded


def test_a_frame_is_masked_as_training_data_is(requests_use_case):
    import pandas as pd

    masking = RecordMasking.for_use_case(requests_use_case)
    frame = pd.DataFrame([RAW, {**RAW, "name": "Keiko Tanaka", "description": "Keiko Tanaka: bins overflowing"}])
    masked = masking.mask_frame(frame)
    assert list(masked.columns) == ["description", "district", "channel", "hour", "weekday"]
    assert masked["description"].iloc[1] == "[NAME]: bins overflowing"
    text = masked.to_json()
    assert [s for s in SECRETS + ["Keiko", "Tanaka"] if s in text] == []


def test_no_stored_byte_holds_the_callers_personal_data(requests_use_case, tmp_path):
    """Every byte under the store's folder (database, write-ahead log) is searched for the raw values."""
    folder = tmp_path / "home" / "monitoring"
    recorder = Recording(RecordStore(f"sqlite:///{folder / 'records.db'}"), "all",
                         RecordMasking.for_use_case(requests_use_case))
    # random hex ids hold '555' about one time in seven over 20 ids: such an id would read as a leaked phone
    ids = [i for i in (new_answer_id() for _ in range(200)) if not any(s.lower() in i for s in SECRETS)][:20]
    for answer_id in ids:
        recorder.record({"answer_id": answer_id, "model": "service-requests-router", "version": "3",
                         "inputs": RAW, "answer": "roads", "confidence": 0.8, "latency_ms": 2.0})
    recorder.close()
    assert recorder.stats()["written"] == 20
    stored = recorder.store.read()
    assert sorted(stored["answer_id"]) == sorted(ids)
    assert "[NAME]" in stored.iloc[0]["inputs"]["description"] and "[PHONE]" in stored.iloc[0]["inputs"]["description"]
    blob = b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())
    assert len(blob) > 4096
    found = [s for s in SECRETS if s.encode() in blob or s.lower().encode() in blob]
    assert found == []


def test_recorder_for_follows_the_policy_and_writes_under_the_home(requests_use_case, settings):
    assert recorder_for(requests_use_case, "off", settings=settings).record({"anything": 1}) is None
    recorder = recorder_for(requests_use_case, "sample=0.5", settings=settings)
    assert isinstance(recorder, Recorder)
    ids = [new_answer_id() for _ in range(200)]
    for answer_id in ids:
        recorder.record({"answer_id": answer_id, "model": "m", "version": "1", "inputs": {"description": "x"},
                         "answer": "roads", "arm": "canary"})
    recorder.record({"answer_id": "not-an-id", "model": "m", "version": "1", "inputs": {}, "answer": "x"})
    recorder.close()
    path = settings.home / "monitoring" / "records.db"
    assert path.exists()
    stored = open_store(settings=settings).read()
    expected = sorted(i for i in ids if RecordPolicy.parse("sample=0.5").wants(i))
    assert sorted(stored["answer_id"]) == expected and set(stored["arm"]) == {"canary"}
    assert recorder.stats()["written"] == len(expected)


@pytest.mark.parametrize("process", [False, True], ids=["thread", "writer-process"])
def test_a_requests_answers_given_as_one_tuple_are_stored_one_row_each_masked(requests_use_case, tmp_path, process):
    """What serving's data plane hands over (``record_answers``: a request's rows as one tuple, no dict a row),
    written by the recorder's thread or by its writer process: every row, masked, flushed before ``close``."""
    folder = tmp_path / "monitoring"
    recorder = Recording(RecordStore(f"sqlite:///{folder / 'records.db'}"), "all",
                         RecordMasking.for_use_case(requests_use_case), process=process)
    base = next(b for b in (new_answer_id()[:24] for _ in range(100)) if not any(s.lower() in b for s in SECRETS))
    ids = [f"{base}{i:08x}" for i in range(3)]  # random hex may hold '555': such an id would read as a leak
    columns = {k: [v, v, v] for k, v in RAW.items()}
    recorder.record_answers(("router", "3", "fp32", "canary", ids, columns, ["roads", "water", "parks"], [0.9, 0.6, 0.5],
                             4.5, 1_700_000_000.0))
    recorder.record(_record())  # a mapping's way, beside it
    recorder.flush()
    stored = recorder.store.read(model="router").set_index("answer_id")
    assert sorted(stored.index) == ids and set(stored["arm"]) == {"canary"}
    assert list(stored.loc[ids, "answer"]) == ["roads", "water", "parks"]
    assert list(stored.loc[ids, "confidence"]) == [0.9, 0.6, 0.5] and set(stored["latency_ms"]) == {4.5}
    assert "[NAME]" in stored.loc[ids[0], "inputs"]["description"]
    recorder.close()
    assert recorder.stats()["written"] == 4 and recorder.stats()["failed"] == 0
    blob = b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())
    assert [s for s in SECRETS if s.encode() in blob or s.lower().encode() in blob] == []


def test_a_writer_process_that_dies_is_started_again(tmp_path):
    """The recorder's writer process killed (out of memory, by hand): the next batch starts a new one, and
    what was written before and after is all there, counted once."""
    import os
    import signal

    store = RecordStore(f"sqlite:///{tmp_path / 'r.db'}")
    recorder = Recording(store, "all", RecordMasking(), process=True)
    before = [_record() for _ in range(5)]
    for record in before:
        recorder.record(record)
    recorder.flush()
    assert recorder.stats()["written"] == 5
    first = recorder._writer
    os.kill(first.pid, signal.SIGKILL)
    first._process.wait(10)
    after = [_record() for _ in range(7)]
    for record in after:
        recorder.record(record)
    recorder.flush()
    assert recorder._writer is not first and recorder._writer.alive()
    recorder.close()
    assert sorted(store.read()["answer_id"]) == sorted(r.answer_id for r in before + after)
    assert recorder.stats()["written"] == 12 and recorder.stats()["failed"] == 0


def test_a_full_queue_drops_and_counts_instead_of_blocking(tmp_path):
    store = RecordStore(f"sqlite:///{tmp_path / 'r.db'}")
    recorder = Recording(store, "all", RecordMasking(), queue_size=1, batch=1)
    for _ in range(300):
        recorder.record(_record())
    recorder.close()
    stats = recorder.stats()
    assert stats["dropped"] > 0 and stats["dropped"] + stats["written"] == 300
    assert store.count() == stats["written"]


def test_the_sqlite_store_stays_under_its_size_cap_dropping_the_oldest(tmp_path):
    store = RecordStore(f"sqlite:///{tmp_path / 'r.db'}", max_bytes=256 * 1024)
    base = 1_700_000_000.0
    text = "pothole " * 40
    for batch in range(12):
        store.write([_record(t=base + batch * 100 + i, description=text, district="Harbor") for i in range(100)])
    assert store.size_bytes() <= 256 * 1024
    kept = store.read()
    assert 0 < len(kept) < 1200
    assert kept["time"].min() > base  # the oldest went first
    assert kept["time"].max() == base + 11 * 100 + 99  # the newest stayed
    assert store.file_bytes() < 2 * 256 * 1024  # pages are given back


def test_a_store_url_that_is_neither_sqlite_nor_postgresql_is_refused(tmp_path):
    with pytest.raises(InvalidInput, match="sqlite:/// or postgresql://"):
        RecordStore(f"mysql://{tmp_path}")


# -- the outcomes file ---------------------------------------------------------------------------
def test_an_outcomes_csv_is_read_and_joined(tmp_path):
    store = RecordStore(f"sqlite:///{tmp_path / 'r.db'}")
    records = [_record(), _record()]
    store.write(records)
    path = tmp_path / "outcomes.csv"
    path.write_text(f"answer_id,outcome,note\n{records[0].answer_id},roads,x\n{'f' * 32},parks,\n")
    result = add_feedback(store, read_outcomes(path))
    assert (result.joined, result.unknown_ids) == (1, ("f" * 32,))
    assert json.loads(json.dumps(result.to_dict()))["unknown"] == 1


@pytest.mark.parametrize("content,match", [
    ("id,label\nabc,roads\n", "no column 'answer_id'"),
    ("answer_id,outcome\n", "no rows"),
    ("answer_id,outcome\nnot-hex,roads\n", "32 hex"),
    (f"answer_id,outcome\n{'a' * 32},\n", "empty"),
    (f"answer_id,outcome\n{'a' * 32},roads\n{'a' * 32},water\n", "two outcomes"),
    (f"answer_id,outcome\n{'a' * 32}\n", "fewer columns"),
])
def test_a_bad_outcomes_file_is_one_line(tmp_path, content, match):
    path = tmp_path / "outcomes.csv"
    path.write_text(content)
    with pytest.raises(InvalidInput, match=match) as err:
        read_outcomes(path)
    assert "\n" not in str(err.value)


def test_a_binary_or_missing_outcomes_file_is_refused(tmp_path):
    path = tmp_path / "outcomes.csv"
    path.write_bytes(b"\xff\xfe\x00\x81binary")
    with pytest.raises(InvalidInput, match="not a UTF-8"):
        read_outcomes(path)
    with pytest.raises(NotFound):
        read_outcomes(tmp_path / "nowhere.csv")


# -- the floor -----------------------------------------------------------------------------------
def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_monitoring_sits_beside_serving():
    """monitoring imports the ground, projects, tuning (only retraining, which tunes) and registry; no floor below
    or beside it imports it."""
    for path in (ROOT / "monitoring").rglob("*.py"):
        forbidden = {"serving", "app"} | ({"tuning"} if path.name != "retrain.py" else set())
        assert not _imports(path) & forbidden, path
    for package in ("civicml", "projects", "tuning", "registry", "serving"):
        for path in (ROOT / package).rglob("*.py"):
            assert "monitoring" not in _imports(path), path
