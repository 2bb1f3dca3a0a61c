"""The serving hot path's shortcuts keep the behaviour of the long way round (issue 26, item 4).

The routes themselves are covered through the app by the other serving tests (every inference request in them
now takes the shortcut); these check the pieces on their own, in milliseconds."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import numpy as np
import pytest

from serving.batching import BatchingRuntime, Columns, Overloaded, row_costs
from serving.http import inference_route
from serving.inference import answer_ids
from serving.protocols import MLFLOW, V2
from serving.runtime import Runtime


@pytest.mark.parametrize("path, expected", [
    ("/invocations", (MLFLOW, None, None)),
    ("/models/m@1/invocations", (MLFLOW, "m@1", None)),
    ("/v2/models/m/infer", (V2, "m", None)),
    ("/v2/models/m/versions/3/infer", (V2, "m", "3")),
    ("/invocations/", None), ("/models//invocations", None), ("/v2/models//infer", None),
    ("/v2/models/m/versions//infer", None), ("/v2/models/m/x/3/infer", None), ("/v2/models/a/b/infer", None),
    ("/v2/models/m", None), ("/explain", None), ("/feedback", None),
])
def test_inference_routes_are_the_ones_fastapi_would_match(path, expected):
    assert inference_route(path) == expected


def test_answer_ids_are_uuid7_hex_with_row_numbers_in_time_order():
    from monitoring.records import RecordPolicy, new_answer_id

    seen, before = set(), time.time_ns() // 1_000_000
    for _ in range(500):
        ids = answer_ids(3)
        first = uuid.UUID(ids[0])
        assert first.version == 7 and first.variant == uuid.RFC_4122 and ids[0] == first.hex
        assert [i[24:] for i in ids] == ["00000000", "00000001", "00000002"] and len({i[:24] for i in ids}) == 1
        seen.add(ids[0])
    after = time.time_ns() // 1_000_000
    assert len(seen) == 500 and len(answer_ids(0)) == 1 and answer_ids(0)[0].endswith("00000000")
    assert all(before <= int(i[:12], 16) <= after for i in seen)  # the time in milliseconds leads
    time.sleep(0.002)
    assert answer_ids(1)[0] > max(seen)  # ids made later sort later: the store's index grows at its end
    stored = uuid.UUID(new_answer_id())  # monitoring's ids for records made outside serving: the same shape
    assert stored.version == 7 and stored.variant == uuid.RFC_4122 and int(stored.hex[:12], 16) >= before
    # the bits sampling reads are random: a request's rows are sampled together, about the rate asked
    kept = sum(RecordPolicy.parse("sample=0.2").wants(answer_ids(1)[0]) for _ in range(20_000))
    assert 3_600 < kept < 4_400
    assert len({RecordPolicy.parse("sample=0.5").wants(i) for i in answer_ids(64)}) == 1


def test_row_costs_of_a_few_rows_match_numpys():
    text = np.empty(3, dtype=object)
    text[:] = ["abc", "", "hello"]
    mixed = np.empty(3, dtype=object)
    mixed[:] = [1.5, "xy", None]
    data = Columns({"t": text, "m": mixed, "n": np.arange(3), "u": np.asarray(["a", "bcd", ""])}, 3)
    assert row_costs(data).tolist() == [1 + 3 + 1 + 1, 1 + 0 + 2 + 3, 1 + 5 + 1 + 0]
    many = Columns({k: np.concatenate([v] * 4) for k, v in data.values.items()}, 12)  # numpy's way
    assert row_costs(many).tolist() == row_costs(data).tolist() * 4


class _Rows(Runtime):
    """Answers each row with its value doubled and the thread that ran it; counts its calls."""

    name = "rows"

    def __init__(self):
        super().__init__(None)
        self.calls = []

    def load(self):
        return None

    def predict(self, data, params=None):
        self.calls.append(len(data))
        if (data["x"] < 0).any():
            raise ValueError("negative")
        return np.asarray([f"{2 * x}:{threading.current_thread().name}" for x in data["x"]], dtype=object)


def test_concurrent_callers_on_one_loop_are_batched_and_each_gets_its_own_rows():
    inner = _Rows()
    batcher = BatchingRuntime(inner, max_batch=64, max_wait_ms=5)

    async def main():
        calls = [batcher.asubmit(Columns({"x": np.asarray([i, i + 100])}, 2)) for i in range(20)]
        bad = batcher.asubmit(Columns({"x": np.asarray([-1])}, 1))
        late = batcher.asubmit(Columns({"x": np.asarray([7])}, 1), deadline=0.0)  # its deadline passed already
        return await asyncio.gather(*calls, bad, late, return_exceptions=True)

    try:
        answers = asyncio.run(main())
    finally:
        batcher.unload()
    for i, answer in enumerate(answers[:20]):
        assert answer.tolist() == [f"{2 * i}:batch-rows", f"{2 * (i + 100)}:batch-rows"]
    assert isinstance(answers[20], ValueError) and isinstance(answers[21], Overloaded)
    assert max(inner.calls) > 2  # merged into batches, not one call each


def test_the_compiled_feature_path_gives_the_pipelines_probabilities():
    """serving/sklearn_fast.py's blocks (word and char_wb TF-IDF, one-hot) side by side, as the pipeline's own
    ColumnTransformer: rows without any known term, unknown categories, one row and many."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    from serving.sklearn_fast import compile_pipeline, linear_proba

    rng = np.random.default_rng(3)
    words = ["pothole", "tree", "noise", "leak", "Oak", "Ave", "bin", "loud", "party", "water", "main", "é"]
    texts = [" ".join(rng.choice(words, rng.integers(1, 8))) for _ in range(200)]
    frame = pd.DataFrame({"text": texts, "district": rng.choice(["N", "S", "E"], 200),
                          "hour": rng.integers(0, 24, 200)})
    y = [t.split()[0] for t in texts]
    features = ColumnTransformer([
        ("words", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), "text"),
        ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), min_df=2, sublinear_tf=True), "text"),
        ("onehot", OneHotEncoder(handle_unknown="ignore"), ["district", "hour"])])
    model = Pipeline([("features", features), ("model", LogisticRegression(max_iter=500))]).fit(frame, y)
    fast, proba = compile_pipeline(model), linear_proba(model.steps[-1][1])
    assert fast is not None and proba is not None
    new = pd.DataFrame({"text": ["zzz qqq", "Pothole on Oak  Ave", "a", "leak leak leak water", "x y"],
                        "district": ["N", "W", "S", "E", "N"], "hour": [3, 25, 0, 23, 7]})
    for rows in (new.head(1), new.iloc[1:2], new, pd.concat([new] * 7, ignore_index=True)):
        columns = {c: rows[c].to_numpy(dtype=object if c != "hour" else np.int64) for c in rows.columns}
        X = fast(columns)
        assert X.shape == (len(rows), features.transform(rows).shape[1])
        assert np.allclose(X.toarray(), features.transform(rows).toarray(), rtol=0, atol=1e-12)
        assert np.allclose(proba(X), model.predict_proba(rows), rtol=0, atol=1e-12)


def test_a_short_batch_does_not_wait_for_requests_the_server_is_not_answering():
    """With the server's in-flight count, the worker stops waiting for more rows once every request being
    answered is with it: a lone request behind a 10-minute max_wait is answered at once; without the count
    concurrent callers are still merged."""
    inner = _Rows()
    in_flight = {"n": 0}
    batcher = BatchingRuntime(inner, max_batch=64, max_wait_ms=600_000, in_flight=lambda: in_flight["n"])

    async def main():
        in_flight["n"] = 1
        alone = await asyncio.wait_for(batcher.asubmit(Columns({"x": np.asarray([1])}, 1)), 120)
        in_flight["n"] = 3
        together = await asyncio.wait_for(asyncio.gather(*[batcher.asubmit(Columns({"x": np.asarray([i])}, 1))
                                                           for i in range(3)]), 120)
        return alone, together

    try:
        alone, together = asyncio.run(main())
    finally:
        batcher.unload()
    assert alone.tolist() == ["2:batch-rows"] and [a.tolist() for a in together] == [[f"{2 * i}:batch-rows"]
                                                                                     for i in range(3)]
    assert inner.calls == [1, 3]  # the three callers of one loop iteration: one batch


def test_char_wb_terms_word_by_word_are_the_analyzers():
    from sklearn.feature_extraction.text import TfidfVectorizer

    from serving.sklearn_fast import _char_wb_terms

    texts = ["Huge pothole on Oak Avenue, two flat tires", "a  b\tc\n\nde", " x ", "", "ab", "abcd abcde abcdef",
             "Überfüllte Mülltonne — 3rd St.", "🚧🚧 road\u00a0works!!", "I", "the sewer smells ... bad", "OAK oak Oak"]
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5)).fit(texts[:6])
    find = vectorizer.vocabulary_.get
    terms, analyze = _char_wb_terms(vectorizer, find), vectorizer.build_analyzer()
    for text in texts * 2:  # the second time from the remembered words
        assert terms(text) == list(map(find, analyze(text)))
    assert _char_wb_terms(TfidfVectorizer().fit(texts), find) is None  # words: the analyzer's own way


def test_a_cheap_models_callers_are_answered_on_the_event_loop_and_a_costly_ones_by_the_worker():
    """``inline_ms``: once the batches are known to be cheap, one loop iteration's callers are one batch run
    on the loop itself (a bad request still fails alone, a passed deadline is still refused); a model whose
    full batch (64 rows at 10 ms a row) would take longer than ``inline_ms`` keeps the worker thread."""
    import time

    class _Slow(_Rows):
        def predict(self, data, params=None):
            time.sleep(0.01)
            return super().predict(data, params)

    async def main(batcher):
        first = await batcher.asubmit(Columns({"x": np.asarray([1])}, 1))  # no batch timed yet: the worker
        calls = [batcher.asubmit(Columns({"x": np.asarray([i])}, 1)) for i in range(6)]
        bad = batcher.asubmit(Columns({"x": np.asarray([-1])}, 1))
        late = batcher.asubmit(Columns({"x": np.asarray([7])}, 1), deadline=0.0)
        return first, await asyncio.gather(*calls, bad, late, return_exceptions=True)

    # the cheap model's bound is wide (a first batch timed on a loaded machine, 3 test processes on 2 cores, may
    # take a few ms a row); the slow one's full batch (640 ms) is well past its bound either way
    for inner, on_loop, inline_ms in ((_Rows(), True, 5000.0), (_Slow(), False, 50.0)):
        batcher = BatchingRuntime(inner, max_batch=64, max_wait_ms=1, inline_ms=inline_ms)
        try:
            first, answers = asyncio.run(main(batcher))
        finally:
            batcher.unload()
        where = threading.current_thread().name if on_loop else "batch-rows"
        assert first.tolist() == ["2:batch-rows"]
        assert [a.tolist() for a in answers[:6]] == [[f"{2 * i}:{where}"] for i in range(6)]
        assert isinstance(answers[6], ValueError) and isinstance(answers[7], Overloaded)
        assert inner.calls[:2] == [1, 7]  # the six callers and the bad one: one batch, then the bad one alone


def test_one_row_is_checked_as_the_column_checks_check_it():
    """A one-row table's plain values become a Row (its arrays made per batch) equal to what the column checks
    give; anything they would refuse or convert takes them, with their message."""
    from mlflow.models import infer_signature
    import pandas as pd

    from civicml.errors import InvalidInput
    from serving.batching import Row, admit
    from serving.dataplane import Table, Validator

    example = pd.DataFrame({"text": ["pothole"], "district": ["N"], "hour": [3], "size": [1.5]})
    validator = Validator(infer_signature(example), {"categories": {"district": ["N", "S"]},
                                                     "ranges": {"hour": [0, 23]}})
    good = {"text": ["Huge pothole"], "district": ["S"], "hour": [23], "size": [2]}
    row = validator.columns(Table(good, 1))
    full = Columns({c.name: c(good[c.name]) for c in validator.checks}, 1)
    assert row.__class__ is Row and row.cost == 1 + 12 + 1 and admit(row, 100) == [14]
    assert row_costs(row).tolist() == row_costs(full).tolist()
    for name, values in full.values.items():
        assert row.values[name].dtype == values.dtype and row.values[name].tolist() == values.tolist()
    other = validator.columns(Table({**good, "hour": [0], "text": ["tree"]}, 1))
    merged, expected = Columns.concat([row, other]), Columns.concat([full, Columns(other.values, 1)])
    assert merged.__class__ is Columns and merged.rows == 2
    for name, values in expected.values.items():
        assert merged.values[name].dtype == values.dtype and merged.values[name].tolist() == values.tolist()
    for bad, message in [({"hour": [24]}, "between 0 and 23"), ({"hour": [True]}, "numeric"),
                         ({"district": ["W"]}, "unknown district"), ({"text": [" "]}, "empty value")]:
        with pytest.raises(InvalidInput, match=message):
            validator.columns(Table({**good, **bad}, 1))
    assert validator.columns(Table({**good, "hour": [3.0]}, 1)).__class__ is Columns  # converted: the checks' way
    missing = validator.columns(Table({**good, "size": [None]}, 1))  # a missing number: NaN, the checks' way
    assert missing.__class__ is Columns and np.isnan(missing.values["size"][0])


def test_the_request_counters_render_as_prometheus_clients_own():
    import re

    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from serving.metrics import LATENCY_BUCKETS, LoopCounter, LoopHistogram

    def rendered(counter, histogram):
        registry = CollectorRegistry()
        requests = counter("x_requests", "d", ["model", "status"], registry=registry)
        latency = histogram("x_seconds", "d", ["model"], buckets=LATENCY_BUCKETS, registry=registry)
        for i, seconds in enumerate([0.0005, 0.0001, 0.3, 7.0, 0.02, 100.0, 0.0] * 30):
            requests.labels("m", str(200 + i % 3)).inc()
            latency.labels(f"m{i % 2}").observe(seconds)
        return re.sub(r"(_created\{[^}]*\}) \S+", r"\1", generate_latest(registry).decode())

    assert rendered(LoopCounter, LoopHistogram) == rendered(Counter, Histogram)


def test_the_light_request_reads_headers_as_starlettes():
    from starlette.datastructures import Headers

    from serving.http import _Request

    raw = [(b"content-type", b"application/json"), (b"x-a", b"1"), (b"x-a", b"2"), (b"x-b", "é".encode("latin-1"))]
    light, full = _Request({"headers": raw}, None).headers, Headers(scope={"headers": raw})
    for name in ("Content-Type", "content-type", "X-A", "x-b", "content-length"):
        assert light.get(name) == full.get(name) and (name in light) == (name in full)


def test_a_requests_records_made_for_its_batch_are_its_own():
    """A classifier's batch answer split among requests: each request's MLflow records come from the batch's
    (made once), the same as from its own rows; a batch with a missing probability leaves each request to
    its own way."""
    from civicml.answers import Answer, mlflow_body
    from serving.batching import split
    from serving.codecs import dumps

    labels = ["b", "a", "c"]
    rng = np.random.default_rng(0)
    for p_a in (rng.random(7), np.asarray([0.1, np.nan, 0.2, 0.3, 0.4, 0.5, 0.6])):
        batch = Answer(label=np.asarray(list("abcabca"), dtype=object), p_a=p_a, p_b=rng.random(7),
                       p_c=rng.random(7), extra=np.arange(7.0))
        pieces = split(batch, [2, 1, 4])
        for piece, (start, stop) in zip(pieces, [(0, 2), (2, 3), (3, 7)]):
            alone = Answer({k: v[start:stop] for k, v in batch.items()})
            assert piece.part_of == (batch, start, stop)
            for meta in ({"labels": labels}, {}):  # the bytes answered (NaN is not equal to itself)
                assert dumps(mlflow_body(piece, meta)) == dumps(mlflow_body(alone, meta))


def test_the_running_loop_is_asyncios_in_each_thread_and_each_run():
    from serving.batching import _running_loop

    async def both():
        return _running_loop(), _running_loop(), asyncio.get_running_loop()

    seen = []
    for _ in range(2):  # a new loop each run: the last one has stopped
        first, again, loop = asyncio.run(both())
        assert first is again is loop
        seen.append(loop)
    other = []
    thread = threading.Thread(target=lambda: other.append(asyncio.run(both())))
    thread.start()
    thread.join()
    assert other[0][0] is other[0][2] and other[0][0] not in seen and seen[0] is not seen[1]
