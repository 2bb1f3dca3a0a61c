"""The serving hot path's leaner pieces give what the long way round gives (issue 26, item 4, CivicML's own
work per request): each is checked here against the library call it stands in for, in milliseconds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from serving.batches import Columns, frame_of


def _objects(values: list) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


_COLUMN_SETS = [
    {"description": _objects(["Huge pothole on Oak Avenue", "Ruído na rua"]), "district": _objects(["Midtown", "X"]),
     "hour": np.asarray([8, 23]), "weekday": np.asarray([1, 6], dtype=np.int32)},
    {"x": np.asarray([0.5, np.nan]), "flag": np.asarray([True, False]), "small": np.asarray([1, 2], dtype=np.uint8),
     "f32": np.asarray([1.5, -2.0], dtype=np.float32)},
    {"mixed": _objects([1, "x"]), "n": np.arange(2)},  # not all text: pandas' own way
    {"missing": _objects(["x", None]), "nan": _objects([np.nan, "y"])},
    {"unicode": np.asarray(["x", "y"]), "dates": np.asarray(["2024-01-01", "2024-01-02"], dtype="datetime64[ns]")},
    {1: np.arange(2), "a": _objects(["p", "q"])},  # a label that is not text
]


@pytest.mark.parametrize("values", _COLUMN_SETS)
def test_a_batchs_frame_is_the_one_pandas_makes(values):
    rows = len(next(iter(values.values())))
    made, expected = Columns(values, rows).frame(), pd.DataFrame(values, copy=False)
    pd.testing.assert_frame_equal(made, expected, check_exact=True)
    assert list(made.dtypes) == list(expected.dtypes) and made.columns.dtype == expected.columns.dtype
    assert made._mgr.nblocks == expected._mgr.nblocks and type(made.index) is type(expected.index)
    for name, array in values.items():  # numbers are handed over without a copy, as pandas hands them over
        assert np.shares_memory(made[name].to_numpy(), array) == np.shares_memory(expected[name].to_numpy(), array)


def test_the_lean_frame_is_used_for_checked_text_and_numbers_and_labels_are_not_shared():
    values = _COLUMN_SETS[0]
    assert frame_of.ok  # this environment's pandas: the lean way agrees with pandas' own
    assert frame_of._make(values, 2) is not None and frame_of._make(_COLUMN_SETS[2], 2) is None
    first, second = frame_of(values, 2), frame_of(values, 2)
    first.columns.name = "renamed by a model"  # one frame's labels changed by the model: not the next one's
    assert second.columns.name is None and frame_of(values, 2).columns.name is None
    for make in (frame_of, lambda v, rows: pd.DataFrame(v, copy=False)):  # a model's write reaches the arrays
        copied = {name: array.copy() for name, array in values.items()}  # as it does through pandas' own frame
        make(copied, 2).loc[0, "hour"] = 99
        assert copied["hour"].tolist() == [99, 23]


_TEXTS = ["Huge pothole on Oak Avenue, two flat tires", "a  b\tc\n\nde", " x ", "", "ab", "abcd abcde abcdef",
          "Überfüllte Mülltonne — 3rd St.", "🚧🚧 road\u00a0works!!", "I", "the sewer smells ... bad", "OAK oak Oak",
          "zz qq zz qq zz", "line\u2028sep\u3000wide_space x_y __ 12 3", "it's-a can't.stop"]


@pytest.mark.parametrize("options", [
    {"ngram_range": (1, 2), "sublinear_tf": True}, {"ngram_range": (1, 3), "stop_words": "english"},
    {"ngram_range": (2, 3), "binary": True, "use_idf": False}, {"norm": None}, {"max_features": 5},
    {"ngram_range": (2, 2), "min_df": 1}, {"ngram_range": (1, 2), "max_features": 12, "use_idf": False},
    {"token_pattern": r"(?u)\b\w+\b", "lowercase": False},
    {"analyzer": "char_wb", "ngram_range": (3, 5), "sublinear_tf": True},
])
def test_a_tfidf_block_is_the_vectorizers_own_transform(options):
    """serving/sklearn_fast.py's TF-IDF block (terms counted for the whole batch by one sort; a word analyzer's
    tokens remembered per white-space-separated piece) against TfidfVectorizer.transform, batch by batch."""
    import scipy.sparse as sp
    from sklearn.feature_extraction.text import TfidfVectorizer

    from serving.sklearn_fast import _tfidf, _word_indices, _word_terms

    vectorizer = TfidfVectorizer(**options).fit(_TEXTS[:8])
    if options.get("analyzer") != "char_wb":
        terms, analyze = _word_terms(vectorizer), vectorizer.build_analyzer()
        indices = _word_indices(vectorizer)  # (1, 2)-grams at most, no stop words: by token pairs
        assert (indices is not None) == (options.get("ngram_range", (1, 1))[1] <= 2 and "stop_words" not in options)
        for text in _TEXTS * 2:  # the second time from the remembered pieces and pairs
            assert terms(text) == analyze(text)
            if indices is not None:
                assert sorted(indices(text)) == sorted(vectorizer.vocabulary_.get(t, -1) for t in analyze(text))
    block, width = _tfidf(vectorizer, "t")
    for batch in (_TEXTS, _TEXTS[:1], _TEXTS[3:4], _TEXTS[3:5], _TEXTS * 3):
        values, indices, lengths = block({"t": _objects(batch)})
        made = sp.csr_matrix((values, indices, np.concatenate([[0], np.cumsum(lengths)])), shape=(len(batch), width))
        expected = vectorizer.transform(batch)
        expected.sort_indices()
        assert np.array_equal(made.indptr, expected.indptr) and np.array_equal(made.indices, expected.indices)
        np.testing.assert_allclose(made.data, expected.data, rtol=0, atol=1e-12)


def test_an_answer_in_one_write_is_the_same_bytes_as_two(tmp_path):
    """serving/http.py's ``_send_in_one_write``: uvicorn's own send, its writes held and joined; a raw client
    reads the same response as from the two plain sends (keep-alive, then a connection the client closes), and
    the second request on a connection is answered too."""
    import socket
    import threading
    import time

    import uvicorn

    from serving.http import _CYCLE, _send_in_one_write
    from serving.inference import Answered
    from serving.server import free_port

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await receive()
        body = b'{"predictions":["Streets"]}' * (1 if scope["path"] == "/small" else 4000)  # 108 kB: several segments
        response = Answered(body, [(b"x-civicml-answer-id", b"ab" * 16), (b"content-length", str(len(body)).encode()),
                                   (b"content-type", b"application/json")])
        if scope["query_string"] == b"one":
            assert send.__self__.__class__ is _CYCLE
            await _send_in_one_write(send.__self__, send, response)
            return
        await send({"type": "http.response.start", "status": 200, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http="httptools", loop="uvloop",
                                           log_level="warning", date_header=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline
            time.sleep(0.02)

        def exchange(queries: list[str], path: str, close: bool) -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                for i, query in enumerate(queries):
                    last = close and i == len(queries) - 1
                    sock.sendall(f"POST {path}?{query} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                                 f"{'Connection: close' + chr(13) + chr(10) if last else ''}\r\n{{}}".encode())
                if not close:
                    sock.sendall(f"POST {path}?{queries[-1]} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                                 "Connection: close\r\n\r\n{}".encode())
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
                return b"".join(chunks)

        for path in ("/small", "/large"):
            for close in (False, True):
                joined, plain = exchange(["one", "one"], path, close), exchange(["two", "two"], path, close)
                assert joined == plain and joined.count(b"HTTP/1.1 200 OK") == (2 if close else 3)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
