"""A compiled feature path for scikit-learn pipelines that start with a ColumnTransformer.

The ColumnTransformer is most of a small model's cost for a few rows (pandas indexing, input
validation per transformer: ~8 ms for one 311 request through a 0.3 ms model). Serving already has
checked numpy columns, so this calls each fitted transformer on its column directly, one-hot encodes
with a dict lookup, and stacks the blocks as the ColumnTransformer would. A TF-IDF block counts its terms
with a C-level Counter (a ``char_wb`` vectorizer's terms worked out once per word, as its n-grams are each
word's own) and weighs and normalises the whole batch at once; the blocks become one CSR matrix without
scipy's hstack (for one row, the matrices' construction cost more than the features). :func:`compile_pipeline`
returns None for anything it does not know; the runtime checks the compiled path against the
pipeline itself at load and keeps the pipeline if they differ.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp

log = logging.getLogger("civicml.serving")


# A block's rows: (values, column indices, entries per row), the parts of a CSR matrix without the matrix
# (scipy's constructor and hstack cost more than a few rows' features); :func:`compile_pipeline` puts the
# blocks side by side in one matrix.
Rows = tuple[np.ndarray, np.ndarray, np.ndarray]


def _onehot(encoder) -> tuple[Callable[[list[np.ndarray]], Rows], int] | None:
    if getattr(encoder, "drop_idx_", None) is not None or getattr(encoder, "_infrequent_enabled", False):
        return None
    if encoder.handle_unknown not in ("ignore", "infrequent_if_exist", "warn"):
        return None
    lookups, offset = [], 0
    for categories in encoder.categories_:
        lookups.append({(c.item() if isinstance(c, np.generic) else c): offset + k
                        for k, c in enumerate(categories)})
        offset += len(categories)
    dtype = encoder.dtype

    def transform(columns: list[np.ndarray]) -> Rows:
        n = len(columns[0])
        found = [[] for _ in range(n)]
        for lookup, values in zip(lookups, columns):  # a row's columns in the order of the categories
            for i, value in enumerate(values.tolist()):
                j = lookup.get(value)
                if j is not None:
                    found[i].append(j)
        indices = [j for row in found for j in row]
        return (np.ones(len(indices), dtype=dtype), np.asarray(indices, dtype=np.int64),
                np.asarray([len(row) for row in found], dtype=np.int64))

    return transform, offset


def _tfidf(transformer, column: str) -> tuple[Callable[[dict], Rows], int] | None:
    """TfidfVectorizer.transform of one text column as rows: the same analyzer and vocabulary, the counts with
    a C-level Counter, the weights and the l2 norm for the whole batch at once (sklearn's order of terms)."""
    weights = getattr(transformer, "_tfidf", None)
    if weights is None or weights.norm not in ("l2", None) or not hasattr(transformer, "vocabulary_"):
        return None
    vocabulary = transformer.vocabulary_
    find = vocabulary.get
    terms = _char_wb_terms(transformer, find)
    if terms is None:
        analyze = transformer.build_analyzer()

        def terms(doc) -> list:
            return list(map(find, analyze(doc)))
    idf = weights.idf_ if weights.use_idf else None
    binary, sublinear, l2 = transformer.binary, weights.sublinear_tf, weights.norm == "l2"

    def transform(data: dict) -> Rows:
        indices, counts, lengths = [], [], []
        for doc in data[column].tolist():
            found = Counter(terms(doc))
            found.pop(None, None)  # terms outside the vocabulary
            indices.extend(found)
            counts.extend(found.values())
            lengths.append(len(found))
        n = len(lengths)
        lengths = np.asarray(lengths, dtype=np.int64)
        indices = np.asarray(indices, dtype=np.int64)
        values = np.asarray(counts, dtype=np.float64)
        if n > 1 or len(indices) > 1:  # each row's terms in column order, as CountVectorizer sorts them
            order = np.lexsort((indices, np.repeat(np.arange(n), lengths)))
            indices, values = indices[order], values[order]
        if binary:
            values.fill(1.0)
        if sublinear:
            np.log(values, values)
            values += 1.0
        if idf is not None:
            values *= idf[indices]
        if l2 and len(values):
            starts = np.zeros(n, dtype=np.int64)
            np.cumsum(lengths[:-1], out=starts[1:])
            norms = np.sqrt(np.add.reduceat(np.append(values * values, 0.0), starts))
            norms[(lengths == 0) | (norms == 0)] = 1.0
            values /= np.repeat(norms, lengths)
        return values, indices, lengths

    return transform, len(vocabulary)


WORDS_KEPT = 20_000  # words whose char_wb terms are remembered (about 6 MB); then forgotten and learnt again


def _char_wb_terms(transformer, find) -> Callable[[str], list] | None:
    """A document's vocabulary indices (None for n-grams outside it) for a ``char_wb`` vectorizer, word by word:
    its n-grams are each padded word's own (sklearn's ``_char_wb_ngrams`` splits the text into words first),
    so a word's indices are worked out once and remembered, and the words of a city's requests repeat. The
    same terms as the analyzer's, in its order; None for any other analyzer."""
    if getattr(transformer, "analyzer", None) != "char_wb" or transformer.input != "content":
        return None
    preprocess, decode, spaces = transformer.build_preprocessor(), transformer.decode, transformer._white_spaces
    ngrams = transformer._char_wb_ngrams
    known: dict[str, list] = {}

    def terms(doc) -> list:
        out: list = []
        for word in spaces.sub(" ", preprocess(decode(doc))).split():
            found = known.get(word)
            if found is None:
                if len(known) >= WORDS_KEPT:
                    known.clear()
                found = known[word] = list(map(find, ngrams(word)))
            out += found
        return out

    return terms


def _of_matrix(X) -> Rows:
    X = sp.csr_matrix(X)
    return X.data, X.indices.astype(np.int64), np.diff(X.indptr).astype(np.int64)


def _block(name: str, transformer, columns) -> tuple[Callable[[dict], Rows], int] | None:
    """(the block's rows of a batch, its width) for one transformer (None: not one this module knows)."""
    from sklearn.feature_extraction.text import CountVectorizer, HashingVectorizer, TfidfVectorizer
    from sklearn.preprocessing import OneHotEncoder

    if isinstance(transformer, TfidfVectorizer) and isinstance(columns, str):
        return _tfidf(transformer, columns)
    if isinstance(transformer, (CountVectorizer, HashingVectorizer)) and isinstance(columns, str):
        width = transformer.n_features if isinstance(transformer, HashingVectorizer) else \
            len(transformer.vocabulary_)
        return (lambda data: _of_matrix(transformer.transform(data[columns]))), width
    if isinstance(transformer, OneHotEncoder) and isinstance(columns, list) and all(isinstance(c, str) for c in columns):
        compiled = _onehot(transformer)
        if compiled is None:
            return None
        encode, width = compiled
        return (lambda data: encode([data[c] for c in columns])), width
    return None


def _side_by_side(parts: list[Rows], widths: list[int], rows: int) -> sp.csr_matrix:
    """The blocks' rows as one CSR matrix, block after block within each row (ColumnTransformer's hstack)."""
    offsets = np.cumsum([0, *widths[:-1]])
    values = np.concatenate([p[0] for p in parts]).astype(np.float64, copy=False) if len(parts) > 1 else \
        parts[0][0]
    indices = np.concatenate([p[1] + offset for p, offset in zip(parts, offsets.tolist())])
    lengths = sum(p[2] for p in parts)
    if rows > 1 and len(parts) > 1:
        order = np.argsort(np.concatenate([np.repeat(np.arange(rows), p[2]) for p in parts]), kind="stable")
        values, indices = values[order], indices[order]
    indptr = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    index_type = np.int32 if sum(widths) < 2**31 and len(indices) < 2**31 else np.int64
    return sp.csr_matrix((values, indices.astype(index_type), indptr.astype(index_type)),
                         shape=(rows, sum(widths)))


def linear_proba(estimator) -> Callable[[Any], np.ndarray] | None:
    """predict_proba of a fitted LogisticRegression as one sparse product and a softmax/sigmoid."""
    from sklearn.linear_model import LogisticRegression

    if type(estimator) is not LogisticRegression:
        return None
    coef, intercept = estimator.coef_.T.copy(), estimator.intercept_.copy()

    def proba(X):
        scores = np.asarray(X @ coef) + intercept
        if scores.shape[1] == 1:
            p = 1.0 / (1.0 + np.exp(-scores[:, 0]))
            return np.column_stack([1 - p, p])
        scores -= scores.max(axis=1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=1, keepdims=True)
        return scores

    return proba


def compile_pipeline(model) -> Callable[[dict], Any] | None:
    """Columns (name -> 1-d array) -> the input of the pipeline's last step, or None if not supported."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    if not isinstance(model, Pipeline) or len(model.steps) < 2:
        return None
    features = model.steps[0][1]
    if not isinstance(features, ColumnTransformer):
        return None
    if not (features.remainder == "drop" or getattr(features, "_remainder", (None, "drop"))[1] == "drop"):
        return None
    blocks = []
    for name, transformer, columns in features.transformers_:
        if transformer == "drop" or (isinstance(columns, list) and not columns):
            continue
        if name == "remainder":
            return None
        block = _block(name, transformer, columns)
        if block is None:
            return None
        blocks.append(block)
    middle = [step for _, step in model.steps[1:-1]]
    sparse_out = bool(getattr(features, "sparse_output_", True))
    widths = [width for _, width in blocks]

    def transform(data: dict):
        parts = [block(data) for block, _ in blocks]
        rows = len(parts[0][2])
        X = _side_by_side(parts, widths, rows)
        if not sparse_out:
            X = X.toarray()
        for step in middle:
            X = step.transform(X)
        return X

    return transform
