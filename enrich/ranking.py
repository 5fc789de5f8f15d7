"""The array work of ranking link candidates, for a block of query notes at once: BM25, feature overlap, top-k.

One block of B queries costs about as many numpy calls as one query did, so ranking the notes a run is
about to send together (CandidateQueue) takes a fraction of the CPU of ranking them one by one. Every sum
is taken in float64 and rounded to float32 once, so a note's scores do not depend on the block it is in
(but for a float64 rounding that lands exactly on a float32 boundary), nor on which terms have dense rows
(tests compare with plain formulations).
"""

from __future__ import annotations

import itertools
from typing import Any, Iterable, Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

QUERY_TERMS = 64  # terms of a note used to find similar notes
K1, B = 1.5, 0.75  # BM25 (Lucene variant) parameters, bm25s's defaults
DENSE_SHARE = 16  # a term in more than max(64, notes/DENSE_SHARE) notes gets a dense row of BM25 weights
DENSE_BYTES = 32 << 20  # memory cap of those rows (the most common terms first)
DENSE_PRODUCT_SHARE = 0.25  # a block's dense rows are added by one product when its queries use this share of them
TIE = 1e-6  # scores are ranked rounded to 6 decimals


def _term_counts(docs: list[list[int]]) -> tuple[IntArray, IntArray, IntArray, IntArray]:
    """Each (term, doc) pair once, sorted by term then doc, with its count; and the length of each doc."""
    n_docs = len(docs)
    lens = np.fromiter(map(len, docs), dtype=np.int64, count=n_docs)
    toks = np.fromiter(itertools.chain.from_iterable(docs), dtype=np.int64, count=int(lens.sum()))
    keys, tf = np.unique(toks * n_docs + np.repeat(np.arange(n_docs, dtype=np.int64), lens), return_counts=True)
    term, doc = np.divmod(keys, max(n_docs, 1))
    return term, doc, tf, lens


def _bm25(counts: tuple[IntArray, IntArray, IntArray, IntArray], n_vocab: int, k1: float, b: float, dtype: Any
          ) -> dict[str, Any]:
    """BM25 (Lucene) weights from term counts, as CSC arrays."""
    term, doc, tf, lens = counts
    n_docs = len(lens)
    df = np.bincount(term, minlength=n_vocab)
    idf = np.log1p((n_docs - df + 0.5) / (df + 0.5))
    avg = max(float(lens.mean()), 1e-9) if n_docs else 1.0
    tfc = tf / (k1 * ((1 - b) + b * lens[doc] / avg) + tf)
    indptr = np.concatenate([[0], np.cumsum(df)]).astype(np.int64)
    return {"data": (idf[term] * tfc).astype(dtype), "indices": doc.astype(np.int32), "indptr": indptr,
            "num_docs": n_docs}


def bm25_matrix(docs: list[list[int]], n_vocab: int, k1: float = K1, b: float = B, dtype: Any = np.float32) -> dict[str, Any]:
    """The BM25 (Lucene) weight of every (doc, term) pair as CSC arrays (bm25s's `scores` layout; a test compares)."""
    return _bm25(_term_counts(docs), n_vocab, k1, b, dtype)


def _spans(starts: IntArray, lens: IntArray) -> IntArray:
    """The positions start, start+1, ... of each (start, len) span, concatenated."""
    return np.arange(int(lens.sum())) + np.repeat(starts - np.cumsum(lens) + lens, lens)


def _first_per_row(order: IntArray, counts: IntArray, k: int) -> IntArray:
    """The first k entries of each row of an order sorted by row first (row r holds counts[r] entries)."""
    rank = np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)
    return order[rank < k]


class TextScorer:
    """BM25 scores of every note for blocks of "more like this" queries: a note's most telling terms.

    A query is given as (query, term) pairs, each query's terms ascending: doc_terms for indexed notes (from
    their term counts, kept when the index is built), query_terms for any token lists.
    """

    def __init__(self, tokens: list[list[int]], n_vocab: int, dense_df: int | None = None) -> None:
        self.n = len(tokens)
        counts = _term_counts(tokens)
        self.bm25 = _bm25(counts, n_vocab, K1, B, np.float32)
        self.df = np.diff(self.bm25["indptr"])  # notes per term
        self.query_idf = np.log1p(self.n / np.maximum(self.df, 1))
        self.dense_row, self.dense = self._dense_rows(dense_df)
        term, doc, tf, _ = counts
        by_doc = np.argsort(doc, kind="stable")  # doc, then term
        self._doc_term, self._doc_tf = term[by_doc].astype(np.int32), tf[by_doc].astype(np.int32)
        self._doc_start = np.concatenate([[0], np.cumsum(np.bincount(doc, minlength=self.n))]).astype(np.int64)

    def _dense_rows(self, min_df: int | None) -> tuple[IntArray, npt.NDArray[np.float64]]:
        """Each term's dense row (-1: none) and the rows: BM25 weights of the terms in more than min_df notes."""
        sc, n, df = self.bm25, self.n, self.df
        cut = max(64, n // DENSE_SHARE) if min_df is None else min_df  # None: the default share
        common = np.flatnonzero(df > cut)
        common = np.sort(common[np.lexsort((common, -df[common]))][: DENSE_BYTES // max(8 * n, 1)])  # most common first
        row = np.full(len(df), -1, dtype=np.int64)
        row[common] = np.arange(len(common))
        dense = np.zeros((len(common), n), dtype=np.float64)
        for r, t in enumerate(common.tolist()):
            a, b = sc["indptr"][t], sc["indptr"][t + 1]
            dense[r, sc["indices"][a:b]] = sc["data"][a:b]
        return row, dense

    def _most_telling(self, row: IntArray, term: IntArray, tf: IntArray, n_rows: int) -> tuple[IntArray, IntArray]:
        """Of (row, term, count) triples sorted by row then term: at most QUERY_TERMS per row by tf x idf (ties:
        the lower id), in the same order; id 0 (the empty token) never."""
        keep = term != 0
        row, term, tf = row[keep], term[keep], tf[keep]
        counts = np.bincount(row, minlength=n_rows)
        if len(counts) and counts.max() > QUERY_TERMS:
            order = np.lexsort((term, -(tf * self.query_idf[term]), row))  # weight descending, then id
            kept = np.sort(_first_per_row(order, counts, QUERY_TERMS))
            row, term = row[kept], term[kept]
        return row, term

    def query_terms(self, queries: Sequence[Sequence[int]]) -> tuple[IntArray, IntArray]:
        """(query, term) pairs of token-id lists (ids outside the vocabulary are never matched)."""
        lens = np.fromiter(map(len, queries), dtype=np.int64, count=len(queries))
        toks = np.fromiter(itertools.chain.from_iterable(queries), dtype=np.int64, count=int(lens.sum()))
        width = len(self.df) + 1
        keys, tf = np.unique(np.repeat(np.arange(len(queries), dtype=np.int64), lens) * width + toks, return_counts=True)
        row, term = np.divmod(keys, width)
        return self._most_telling(row, term, tf, len(queries))

    def doc_terms(self, docs: Sequence[int]) -> tuple[IntArray, IntArray]:
        """(query, term) pairs of indexed notes (positions), as query_terms gives for their tokens."""
        at = np.asarray(docs, dtype=np.int64)
        starts, lens = self._doc_start[at], self._doc_start[at + 1] - self._doc_start[at]
        spans = _spans(starts, lens)
        row = np.repeat(np.arange(len(at), dtype=np.int64), lens)
        terms, tf = self._doc_term[spans].astype(np.int64), self._doc_tf[spans].astype(np.int64)
        return self._most_telling(row, terms, tf, len(at))

    def sums(self, row: IntArray, term: IntArray, n_rows: int) -> FloatArray:
        """Per query, the BM25 sum of its terms' weights in every note (float64 sums: dense rows by _add_dense,
        the other terms' postings by one bincount)."""
        n, sc = self.n, self.bm25
        out = np.zeros((n_rows, n), dtype=np.float64)
        dense = self.dense_row[term]
        rare = dense < 0
        if rare.any():
            starts = sc["indptr"][term[rare]]
            lens = sc["indptr"][term[rare] + 1] - starts
            spans = _spans(starts, lens)
            at = np.repeat(row[rare] * n, lens) + sc["indices"][spans]
            out += np.bincount(at, weights=sc["data"][spans], minlength=out.size).reshape(out.shape)
        if not rare.all():
            self._add_dense(out, row[~rare], dense[~rare])
        return out.astype(np.float32)

    def _add_dense(self, out: npt.NDArray[np.float64], row: IntArray, dense: IntArray) -> None:
        """Add the dense rows of the (query, dense row) pairs: one product when the queries share most of the
        rows they use, else each query's own rows (a product over rows few queries use is mostly zeros)."""
        used, col = np.unique(dense, return_inverse=True)
        if len(dense) >= DENSE_PRODUCT_SHARE * len(out) * len(used):
            pick = np.zeros((len(out), len(used)), dtype=np.float64)
            pick[row, col] = 1.0
            out += pick @ (self.dense if len(used) == len(self.dense) else self.dense[used])
            return
        bounds = np.searchsorted(row, np.arange(len(out) + 1)).tolist()
        for r, (a, b) in enumerate(zip(bounds, bounds[1:])):
            if b > a:
                out[r] += np.add.reduce(self.dense[dense[a:b]], axis=0)

    def scores(self, row: IntArray, term: IntArray, n_rows: int) -> FloatArray:
        """Per query, the BM25 sums scaled to 0..1 (the best note scores 1)."""
        sums = self.sums(row, term, n_rows)
        top = sums.max(axis=1, initial=np.float32(0))
        return np.divide(sums, np.where(top > 0, top, np.float32(1))[:, None], out=sums)


class Features:
    """Which notes have which features (tags, link targets), as postings with IDF weights."""

    def __init__(self, rows: Sequence[Iterable[str]]) -> None:
        self.vocab: dict[str, int] = {}
        postings: list[list[int]] = []
        for i, row in enumerate(rows):
            for f in sorted(set(row)):  # sorted: the same ids in every process
                fid = self.vocab.setdefault(f, len(self.vocab))
                if fid == len(postings):
                    postings.append([])
                postings[fid].append(i)
        self.n = len(rows)
        self.postings = [np.asarray(p, dtype=np.int64) for p in postings]
        self.df = np.asarray([len(p) for p in postings], dtype=np.int64)
        self.idf = np.where(self.df > 1, np.log1p(self.n / np.maximum(self.df, 1)), 0.0).astype(np.float32)
        self._idf = self.idf.tolist()

    def similarity(self, queries: Sequence[Iterable[str]]) -> FloatArray:
        """Per query and note: the IDF-weighted share of the query's features the note also has (0..1)."""
        ids = [sorted({self.vocab[f] for f in feats if f in self.vocab}) for feats in queries]
        totals = np.asarray([sum(self._idf[i] for i in row) for row in ids], dtype=np.float64)
        out = np.zeros((len(queries), self.n), dtype=np.float64)
        flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64)
        if len(flat):
            at = np.repeat(np.repeat(np.arange(len(ids), dtype=np.int64) * self.n, list(map(len, ids))), self.df[flat])
            at += np.concatenate([self.postings[i] for i in flat.tolist()])
            out += np.bincount(at, weights=np.repeat(self.idf[flat], self.df[flat]), minlength=out.size).reshape(out.shape)
        out /= np.where(totals > 0, totals, 1.0)[:, None]
        return out.astype(np.float32)


def top_k(scores: FloatArray, k: int, id_rank: IntArray) -> list[list[tuple[int, float]]]:
    """Per row, the positions of the k best scores at least 1e-9, with those scores rounded to 6 decimals:
    rounded score descending, then id_rank.

    Scores to leave out are -inf. Every score that rounds like the k-th one is looked at, so a tie at the
    6th decimal is broken by id as a full sort would.
    """
    n_rows, n = scores.shape
    kth = np.partition(scores, n - k, axis=1)[:, n - k] if n > k else np.full(n_rows, -np.inf, dtype=np.float32)
    floor = np.maximum(kth.astype(np.float64) - TIE, 1e-9)
    rows, cols = np.nonzero(scores >= floor[:, None])
    rounded = np.round(scores[rows, cols].astype(np.float64), 6)
    order = np.lexsort((id_rank[cols], -rounded, rows))
    kept = _first_per_row(order, np.bincount(rows, minlength=n_rows), k)
    out: list[list[tuple[int, float]]] = [[] for _ in range(n_rows)]
    for r, c, score in zip(rows[kept].tolist(), cols[kept].tolist(), rounded[kept].tolist()):
        out[r].append((c, score))
    return out
