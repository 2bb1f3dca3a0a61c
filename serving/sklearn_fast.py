"""A compiled feature path for scikit-learn pipelines that start with a ColumnTransformer.

The ColumnTransformer is most of a small model's cost for a few rows (pandas indexing, input
validation per transformer: ~8 ms for one 311 request through a 0.3 ms model). Serving already has
checked numpy columns, so this calls each fitted transformer on its column directly, one-hot encodes
with a dict lookup, and stacks the blocks as the ColumnTransformer would. A TF-IDF block counts the batch's
terms with one numpy sort (a ``char_wb`` vectorizer's terms worked out once per word, as its n-grams are each
word's own) and weighs and normalises the whole batch at once; the blocks become one CSR matrix without
scipy's hstack (for one row, the matrices' construction cost more than the features). :func:`compile_pipeline`
returns None for anything it does not know; the runtime checks the compiled path against the
pipeline itself at load and keeps the pipeline if they differ.
"""

from __future__ import annotations

import logging
from array import array
from itertools import repeat
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
    """TfidfVectorizer.transform of one text column as rows: the same analyzer and vocabulary; the batch's terms
    as one array of vocabulary indices (-1 outside it), counted per row and term by one sort of row x width +
    term (which leaves each row's terms in column order, as CountVectorizer sorts them); the weights and the l2
    norm for the whole batch at once. A Counter per document cost about twice as much (the char_wb block of 24
    311 requests: ~590 -> ~290 µs)."""
    weights = getattr(transformer, "_tfidf", None)
    if weights is None or weights.norm not in ("l2", None) or not hasattr(transformer, "vocabulary_"):
        return None
    vocabulary = transformer.vocabulary_
    width = len(vocabulary)
    find = vocabulary.get
    terms = _char_wb_terms(transformer, lambda term: find(term, -1), _indices) or _word_indices(transformer)
    if terms is None:
        analyze = transformer.build_analyzer()

        def terms(doc):
            return map(find, analyze(doc), repeat(-1))
    idf = weights.idf_ if weights.use_idf else None
    binary, sublinear, l2 = transformer.binary, weights.sublinear_tf, weights.norm == "l2"

    def transform(data: dict) -> Rows:
        found, lengths = array("q"), []
        for doc in data[column].tolist():
            before = len(found)
            found.extend(terms(doc))
            lengths.append(len(found) - before)
        n = len(lengths)
        indices = np.frombuffer(found, dtype=np.int64) if found else np.zeros(0, dtype=np.int64)
        keys = np.repeat(np.arange(0, n * width, width, dtype=np.int64), lengths) + indices
        keys, counts = np.unique(keys[indices >= 0], return_counts=True)
        rows = keys // width
        indices = keys - rows * width
        lengths = np.bincount(rows, minlength=n).astype(np.int64, copy=False)
        values = counts.astype(np.float64)
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

    return transform, width


def _word_terms(transformer) -> Callable[[str], list] | None:
    """A ``word`` analyzer's terms, as its own analyzer gives them (the same preprocessor, tokenizer and stop
    words; n-grams in its order: every unigram, then every bigram, ...), with the n-grams joined in one
    comprehension instead of sklearn's loop of slices. None for another analyzer.

    With sklearn's default token pattern (runs of two or more word characters) a token never spans white
    space, so a document's tokens are its white-space-separated pieces' tokens one after the other: each
    piece's are found once and remembered (the regular expression was half of the words block's time), as
    :func:`_char_wb_terms` remembers words."""
    if getattr(transformer, "analyzer", None) != "word" or transformer.input != "content":
        return None
    preprocess, tokenize, decode = transformer.build_preprocessor(), transformer.build_tokenizer(), transformer.decode
    if transformer.tokenizer is None and transformer.token_pattern == r"(?u)\b\w\w+\b":
        tokenize = _tokens_by_piece(tokenize)
    stop_words = transformer.get_stop_words()
    low, high = transformer.ngram_range

    def terms(doc) -> list:
        tokens = tokenize(preprocess(decode(doc)))
        if stop_words is not None:
            tokens = [w for w in tokens if w not in stop_words]
        out = list(tokens) if low == 1 else []
        for n in range(max(low, 2), high + 1):
            if n == 2:
                out += [a + " " + b for a, b in zip(tokens, tokens[1:])]
            else:
                out += [" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
        return out

    return terms


def _word_indices(transformer) -> Callable[[str], array] | None:
    """A ``word`` analyzer's terms as vocabulary indices (-1 outside it), as :func:`_word_terms` finds them, for
    unigrams and bigrams (``ngram_range`` within (1, 2), no stop words): a bigram is looked up by its two
    tokens (a pair remembered with its index, :data:`WORDS_KEPT` pairs) instead of joining them into a new
    string and hashing it; a document's unigrams come from its pieces' remembered tokens. The same indices,
    in another order (the block counts them with one sort). None for anything else."""
    if _word_terms(transformer) is None or transformer.get_stop_words() is not None \
            or not (1 <= transformer.ngram_range[0] <= transformer.ngram_range[1] <= 2):
        return None
    preprocess, tokenize, decode = transformer.build_preprocessor(), transformer.build_tokenizer(), transformer.decode
    if transformer.tokenizer is None and transformer.token_pattern == r"(?u)\b\w\w+\b":
        tokenize = _tokens_by_piece(tokenize)
    vocabulary = transformer.vocabulary_
    unigrams, bigrams = transformer.ngram_range[0] == 1, transformer.ngram_range[1] == 2
    pairs = _Pairs(vocabulary)
    find, pair = vocabulary.get, pairs.__getitem__

    def indices(doc) -> array:
        tokens = tokenize(preprocess(decode(doc)))
        out = _indices(map(find, tokens, repeat(-1))) if unigrams else _indices()
        if bigrams:
            out.extend(map(pair, zip(tokens, tokens[1:])))
        return out

    return indices


class _Pairs(dict):
    """(token, token) -> the vocabulary index of the bigram "token token" (-1 outside it), found on first use
    and remembered (:data:`WORDS_KEPT` pairs, then forgotten and found again)."""

    def __init__(self, vocabulary: dict):
        super().__init__()
        self.vocabulary = vocabulary

    def __missing__(self, tokens: tuple) -> int:
        if len(self) >= WORDS_KEPT:
            self.clear()
        found = self[tokens] = self.vocabulary.get(" ".join(tokens), -1)
        return found


def _tokens_by_piece(tokenize: Callable[[str], list]) -> Callable[[str], list]:
    """``tokenize`` (a pattern whose tokens hold no white space) of a document as its pieces' tokens, each
    white-space-separated piece's found once and remembered (:data:`WORDS_KEPT` pieces)."""
    known: dict[str, list] = {}

    def tokens(doc: str) -> list:
        out: list = []
        for piece in doc.split():
            found = known.get(piece)
            if found is None:
                if len(known) >= WORDS_KEPT:
                    known.clear()
                found = known[piece] = tokenize(piece)
            out += found
        return out

    return tokens


WORDS_KEPT = 20_000  # words whose char_wb terms are remembered (about 6 MB); then forgotten and learnt again


def _indices(values=()) -> array:
    """Vocabulary indices as a C array of int64: a batch's are read into numpy without a copy, and a remembered
    word's are added to a document's with one copy (a list's ints are converted one by one each time)."""
    return array("q", values)


def _char_wb_terms(transformer, find, kind: Callable = list) -> Callable[[str], list] | None:
    """A document's vocabulary indices (None for n-grams outside it) for a ``char_wb`` vectorizer, word by word:
    its n-grams are each padded word's own (sklearn's ``_char_wb_ngrams`` splits the text into words first),
    so a word's indices are worked out once and remembered, and the words of a city's requests repeat. The
    same terms as the analyzer's, in its order (a ``kind``: a list, or :func:`_indices`); None for any other
    analyzer."""
    if getattr(transformer, "analyzer", None) != "char_wb" or transformer.input != "content":
        return None
    preprocess, decode, spaces = transformer.build_preprocessor(), transformer.decode, transformer._white_spaces
    ngrams = transformer._char_wb_ngrams
    known: dict[str, list] = {}

    if spaces.pattern == r"\s\s+":  # runs of white space made one space, then split on white space: the same
        spaces = None  # words as split() alone (the pattern's \s and str.split's white space are the same)

    def terms(doc) -> list:
        out = kind()
        text = preprocess(decode(doc))
        for word in (text if spaces is None else spaces.sub(" ", text)).split():
            found = known.get(word)
            if found is None:
                if len(known) >= WORDS_KEPT:
                    known.clear()
                found = known[word] = kind(map(find, ngrams(word)))
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
