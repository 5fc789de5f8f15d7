"""Related-note candidates: BM25 over note text plus graph signals (shared tags, shared links, backlinks)."""

from __future__ import annotations

import itertools
import operator
import re
from collections import defaultdict
from typing import Any, Iterable, NamedTuple, Sequence

import numpy as np
import numpy.typing as npt

from . import visible
from .links import is_attachment
from .roles import KEY_POINTS, default_roles
from .tags import fold_tag, singular
from .vault import Vault, VaultNote

FloatArray = npt.NDArray[np.float32]

CONTENT_TOKENS = 300  # tokens of article text indexed per note
CONTENT_CHARS = 2500  # raw characters looked at to find them
BINARY_PROBE = 400  # characters checked for compressed/binary content
LINE_CHARS = 100
QUERY_TERMS = 64  # terms of a note used to find similar notes
W_TEXT, W_TAGS, W_LINKS, W_BACKLINK = 1.0, 0.35, 0.35, 0.25
K1, B = 1.5, 0.75  # BM25 (Lucene variant) parameters, bm25s's defaults
DENSE_SHARE = 16  # a term in more than max(64, notes/DENSE_SHARE) notes gets a dense row of BM25 weights
DENSE_BYTES = 32 << 20  # memory cap of those rows (the most common terms first)

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_WORD = re.compile(r"[a-z0-9]+")
_CJK_RUN = re.compile(f"[{_CJK}]+")
_MARKUP = re.compile(r"<[^>\n]*>|\]\([^)\n]*\)|\w+://\S+")
_BINARY = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffd]")
_BULLET = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+", re.MULTILINE)
_SENTENCE_END = re.compile(r"[.!?](?=\s)|[。！？]")  # the end of a first sentence (a match starts at its mark)
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_HAS_WORD = re.compile(r"[^\W_]")
_FEED_NOISE = re.compile(r"arXiv:\S+\s+Announce Type:\s*\S+\s*$", re.IGNORECASE)  # arXiv RSS preamble line
_ABSTRACT = re.compile(r"^(?:arXiv:\S+\s+Announce Type:\s*\S+\s+)?Abstract:\s*", re.IGNORECASE)
_BAD_ID_CHARS = re.compile(r"[\[\]|#^]")
_STOPWORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have having he
    her here hers him his how i if in into is it its itself just let me more most my no nor not now of off on once
    only or other our ours out over own same she should so some such than that the their theirs them then there
    these they this those through to too under until up very was we were what when where which while who whom why
    will with would you your yours via use used using one two new s t don isn aren http https www com html""".split()
)


class Candidate(NamedTuple):
    """One note the model may link to (a named tuple: fifteen are built per note)."""

    id: str  # file stem (what [[id]] resolves to)
    title: str
    line: str  # one line for the prompt: first key point or first sentence
    score: float


def _word(word: str) -> str:
    """An English token as indexed: '' for stopwords and numbers, simple plurals folded."""
    if len(word) < 2 or word in _STOPWORDS or word.isdigit():
        return ""
    return singular(word)


_WORDS: dict[str, str] = {}
_MEMO_LIMIT = 1_000_000


def _words(text: str, limit: int | None) -> list[str]:
    """English tokens of lowercased text (normalisation memoised per word)."""
    words = _WORD.findall(text)
    if limit is not None:
        words = words[: limit * 2]
    missing = set(words).difference(_WORDS)
    if len(_WORDS) + len(missing) > _MEMO_LIMIT:
        _WORDS.clear()
        missing = set(words)
    for w in missing:
        _WORDS[w] = _word(w)
    out = list(filter(None, map(_WORDS.__getitem__, words)))
    return out if limit is None else out[:limit]


def _cjk_tokens(text: str, limit: int | None) -> list[str]:
    """Character bigrams of each CJK run (a lone character stands for itself)."""
    out: list[str] = []
    for run in _CJK_RUN.findall(text):
        if len(run) == 1:
            out.append(run)
        else:
            out.extend(map(operator.add, run[:-1], run[1:]))
        if limit is not None and len(out) >= limit:
            return out[:limit]
    return out


def tokenize(text: str, limit: int | None = None) -> list[str]:
    """Lowercase English words without stopwords, and CJK character bigrams (lone characters as is).

    With a limit, at most `limit` English and `limit` CJK tokens are kept (from the start of the text).
    """
    low = text.lower()
    words = _words(low, limit)
    return words if low.isascii() else words + _cjk_tokens(low, limit)


def key_points(vn: VaultNote) -> list[str]:
    """The note's key-point bullets that are not template placeholders."""
    sec = vn.note.section(KEY_POINTS)
    if sec is None:
        return []
    roles = default_roles()
    lines = (_BULLET.sub("", ln).strip() for ln in vn.note.body(sec).splitlines())
    return [ln for ln in lines if ln and not roles.is_placeholder_line(ln)]


def _raw_content(vn: VaultNote) -> str:
    """The start of the article text, or '' when it is binary."""
    raw = vn.note.content_text()[:CONTENT_CHARS]
    bad = len(_BINARY.findall(raw, 0, BINARY_PROBE))
    return "" if bad >= 4 and bad >= 0.05 * min(len(raw), BINARY_PROBE) else raw


def _content(vn: VaultNote) -> str:
    """The visible start of the article (markup removed), or '' when it is binary."""
    return visible.visible_text(_raw_content(vn))


def _key_point_text(vn: VaultNote) -> str:
    """The key-point section's text, bullets removed (placeholders kept: cheap and harmless for BM25)."""
    sec = vn.note.section(KEY_POINTS)
    return _BULLET.sub("", vn.note.body(sec)) if sec is not None else ""


def note_tokens(vn: VaultNote) -> list[str]:
    """Tokens indexed for a note: title (twice), aliases, tags, key points, start of content."""
    title = tokenize(vn.title)
    names = tokenize(" ".join([*vn.aliases, *(t.replace("-", " ").replace("_", " ") for t in vn.tags)]))
    body = _key_point_text(vn) + "\n" + _raw_content(vn)
    if "<" in body or "](" in body or "://" in body:
        body = _MARKUP.sub(" ", body)
    return title + title + names + tokenize(body, CONTENT_TOKENS)


def _first_text_line(content: str) -> str:
    """The first line of content with visible words; a line ending in a colon runs on into the next ones."""
    out = ""
    for raw in _COMMENT.sub("", content).splitlines():
        if raw.lstrip().startswith(("#", "|")) or _FEED_NOISE.match(raw.strip()):
            continue
        line = _ABSTRACT.sub("", visible.visible_text(raw))
        if _HAS_WORD.search(line):
            out = f"{out} {line}".strip()
            if not out.endswith((":", "：")) or len(out) >= LINE_CHARS:
                break
    return out


def candidate_line(vn: VaultNote) -> str:
    """One prompt line: the first key point, else the first sentence of the content."""
    points = key_points(vn)
    text = visible.visible_text(points[0]) if points else _first_text_line(_raw_content(vn))
    if not points and text:
        end = _SENTENCE_END.search(text)
        text = text[: end.end()] if end else text
    text = " ".join(text.split())
    return text if len(text) <= LINE_CHARS else text[: LINE_CHARS - 1].rstrip() + "…"


def link_id(vault: Vault, vn: VaultNote) -> str | None:
    """The link target that resolves to this note (stem, else folder path), or None."""
    for cand in (vn.id, vn.rel[: -len(vn.path.suffix)] if vn.path.suffix else vn.rel):
        if not _BAD_ID_CHARS.search(cand) and vault.resolve(cand) is vn:
            return cand
    return None


def _link_keys(vault: Vault, vn: VaultNote) -> set[str]:
    """What a note links to: resolved note rel paths, or the folded target when dangling."""
    keys: set[str] = set()
    for ln in vn.links:
        if not ln.target or is_attachment(ln.target):
            continue
        hit = vault.resolve(ln.target)
        keys.add("n:" + hit.rel if hit is not None else "d:" + ln.key)
    return keys


class _Features:
    """Which notes have which features (tags, link targets), as postings with IDF weights."""

    def __init__(self, rows: Sequence[Iterable[str]]) -> None:
        self.vocab: dict[str, int] = {}
        postings: list[list[int]] = []
        for i, row in enumerate(rows):
            for f in sorted(set(row)):  # sorted: the same ids, so the same float sums, in every process
                fid = self.vocab.setdefault(f, len(self.vocab))
                if fid == len(postings):
                    postings.append([])
                postings[fid].append(i)
        self.n = len(rows)
        self.postings = [np.asarray(p, dtype=np.int64) for p in postings]
        self.df = np.asarray([len(p) for p in postings], dtype=np.int64)
        self.idf = np.where(self.df > 1, np.log1p(self.n / np.maximum(self.df, 1)), 0.0).astype(np.float32)

    def similarity(self, features: Iterable[str]) -> FloatArray:
        """Per note: IDF-weighted share of these features it also has (0..1)."""
        ids = sorted({self.vocab[f] for f in features if f in self.vocab})
        total = float(self.idf[ids].sum()) if ids else 0.0
        if total <= 0.0:
            return np.zeros(self.n, dtype=np.float32)
        rows = np.concatenate([self.postings[i] for i in ids])
        sums = np.bincount(rows, weights=np.repeat(self.idf[ids], self.df[ids]), minlength=self.n)
        return np.divide(sums, total, out=sums).astype(np.float32)


def bm25_matrix(docs: list[list[int]], n_vocab: int, k1: float = K1, b: float = B, dtype: Any = np.float32) -> dict[str, Any]:
    """The BM25 (Lucene) weight of every (doc, term) pair as CSC arrays (bm25s's `scores` layout; a test compares)."""
    n_docs = len(docs)
    lens = np.fromiter(map(len, docs), dtype=np.int64, count=n_docs)
    toks = np.fromiter(itertools.chain.from_iterable(docs), dtype=np.int64, count=int(lens.sum()))
    keys, tf = np.unique(toks * n_docs + np.repeat(np.arange(n_docs, dtype=np.int64), lens), return_counts=True)
    term, doc = keys // n_docs, keys % n_docs  # sorted by term, then doc: CSC order
    df = np.bincount(term, minlength=n_vocab)
    idf = np.log1p((n_docs - df + 0.5) / (df + 0.5))
    avg = max(float(lens.mean()), 1e-9) if n_docs else 1.0
    tfc = tf / (k1 * ((1 - b) + b * lens[doc] / avg) + tf)
    indptr = np.concatenate([[0], np.cumsum(df)]).astype(np.int64)
    return {"data": (idf[term] * tfc).astype(dtype), "indices": doc.astype(np.int32), "indptr": indptr,
            "num_docs": n_docs}


class CandidateIndex:
    """Ranks the notes of a vault as link candidates for one note; built once per run."""

    def __init__(self, vault: Vault, dense_df: int | None = None) -> None:
        self.vault = vault
        self.notes = list(vault.notes)
        self._pos = {vn.rel: i for i, vn in enumerate(self.notes)}
        self._ids = [link_id(vault, vn) for vn in self.notes]
        order = sorted(range(len(self._ids)), key=lambda i: str(self._ids[i]))
        self._id_rank = np.empty(len(order), dtype=np.int64)
        self._id_rank[order] = np.arange(len(order))
        ids: defaultdict[str, int] = defaultdict(itertools.count().__next__)
        ids[""]  # id 0: the empty token (as bm25s reserves it)
        self._tokens = [list(map(ids.__getitem__, note_tokens(vn))) for vn in self.notes]
        self._vocab = dict(ids)
        self._bm25 = bm25_matrix(self._tokens, len(self._vocab))
        self._df = np.diff(self._bm25["indptr"])  # notes per term
        self._dense_row, self._dense = self._dense_rows(dense_df)
        self._query_idf = np.log1p(len(self.notes) / np.maximum(self._df, 1))
        self._link_sets = link_keys = [_link_keys(vault, vn) for vn in self.notes]
        self._tag_sets = [self._tag_keys(vn) for vn in self.notes]
        self._tags = _Features(self._tag_sets)
        self._links = _Features(link_keys)
        self._backlinks = self._backlink_lists(link_keys)
        self._lines: dict[int, str] = {}

    @staticmethod
    def _tag_keys(vn: VaultNote) -> set[str]:
        """The folded tags of a note."""
        return set(filter(None, map(fold_tag, vn.tags)))

    def _token_ids(self, tokens: list[str]) -> list[int]:
        """Vocabulary ids of a query's tokens (unknown tokens dropped)."""
        return [i for i in map(self._vocab.get, tokens) if i is not None]

    @staticmethod
    def _backlink_lists(link_keys: list[set[str]]) -> dict[str, list[int]]:
        """For each note rel path: positions of notes linking to it."""
        out: dict[str, list[int]] = {}
        for i, keys in enumerate(link_keys):
            for key in keys:
                if key.startswith("n:"):
                    out.setdefault(key[2:], []).append(i)
        return out

    def _text_scores(self, tokens: list[int]) -> FloatArray:
        """BM25 scores of every note for a note's token ids, scaled to 0..1."""
        query = self._query_terms(tokens)
        if not len(query):
            return np.zeros(len(self.notes), dtype=np.float32)
        scores = self._bm25_scores(query)
        top = float(scores.max())
        return scores / np.float32(top) if top > 0 else scores

    def _query_terms(self, tokens: list[int]) -> npt.NDArray[np.int64]:
        """The note's most telling terms (tf x idf), at most QUERY_TERMS, as a "more like this" query."""
        ids, tf = np.unique(np.fromiter(tokens, dtype=np.int64, count=len(tokens)), return_counts=True)
        if len(ids) and not ids[0]:  # id 0, the empty token
            ids, tf = ids[1:], tf[1:]
        if len(ids) <= QUERY_TERMS:
            return ids
        weight = tf * self._query_idf[ids]
        return ids[np.argsort(-weight, kind="stable")[:QUERY_TERMS]]  # ids ascending among equal weights

    def _dense_rows(self, min_df: int | None) -> tuple[npt.NDArray[np.int64], FloatArray]:
        """Each term's dense row (-1: none) and the rows: BM25 weights of the terms in more than min_df notes."""
        sc, n = self._bm25, len(self.notes)
        indptr, indices, data, df = sc["indptr"], sc["indices"], sc["data"], self._df
        cut = max(64, n // DENSE_SHARE) if min_df is None else min_df  # None: the default share
        common = np.flatnonzero(df > cut)
        common = np.sort(common[np.lexsort((common, -df[common]))][: DENSE_BYTES // max(4 * n, 1)])  # most common first
        row = np.full(len(df), -1, dtype=np.int64)
        row[common] = np.arange(len(common))
        dense = np.zeros((len(common), n), dtype=np.float32)
        for r, t in enumerate(common.tolist()):
            dense[r, indices[indptr[t] : indptr[t + 1]]] = data[indptr[t] : indptr[t + 1]]
        return row, dense

    def _bm25_scores(self, query: npt.NDArray[np.int64]) -> FloatArray:
        """Sum the BM25 weights of the query terms: dense rows of common terms, a bincount of the others' postings."""
        sc, n = self._bm25, len(self.notes)
        rows = self._dense_row[query]
        rare = query[rows < 0]
        starts = sc["indptr"][rare]
        lens = sc["indptr"][rare + 1] - starts
        spans = np.arange(int(lens.sum())) + np.repeat(starts - np.cumsum(lens) + lens, lens)  # each term's postings
        out = np.bincount(sc["indices"][spans], weights=sc["data"][spans], minlength=n) if len(spans) else np.zeros(n)
        if len(rows) > len(rare):  # float64 sums, as bincount's: the same float32 scores but for rare roundings
            out += np.add.reduce(self._dense[rows[rows >= 0]], axis=0, dtype=np.float64)
        return out.astype(np.float32)

    def scores(self, vn: VaultNote) -> FloatArray:
        """Combined score of every indexed note as a candidate for vn."""
        pos = self._pos.get(vn.rel)
        if pos is not None:  # an indexed note: what the index already holds for it
            tokens, tags, links = self._tokens[pos], self._tag_sets[pos], self._link_sets[pos]
        else:
            tokens, tags, links = self._token_ids(note_tokens(vn)), self._tag_keys(vn), _link_keys(self.vault, vn)
        total = W_TEXT * self._text_scores(tokens)
        total += W_TAGS * self._tags.similarity(tags)
        total += W_LINKS * self._links.similarity(links)
        back = self._backlinks.get(vn.rel, [])
        if back:
            total[back] += W_BACKLINK
        return total

    def _excluded(self, vn: VaultNote) -> set[int]:
        """Positions that may never be candidates: the note itself and notes it links to."""
        hits = [vn] + [self.vault.resolve(ln.target) for ln in vn.links if ln.target]
        return {self._pos[h.rel] for h in hits if h is not None and h.rel in self._pos}

    def candidates(self, vn: VaultNote, k: int = 15) -> list[Candidate]:
        """The top-k candidates for vn: score descending, then id; never vn or notes it already links to."""
        if k <= 0 or not self.notes:
            return []
        total = self.scores(vn)
        excluded = self._excluded(vn)
        nth = len(total) - min(len(total), k + len(excluded))
        top = np.flatnonzero(total >= max(float(np.partition(total, nth)[nth]), 1e-9))  # ties of the last one too
        rounded = np.round(total[top].astype(np.float64), 6)
        ranked = top[np.lexsort((self._id_rank[top], -rounded))]  # score descending, then id
        picks: list[Candidate] = []
        for i, score in zip(ranked.tolist(), total[ranked].tolist()):
            cid = self._ids[i]
            if i not in excluded and cid is not None and cid != vn.id:
                picks.append(Candidate(cid, self.notes[i].title, self.line(i), round(score, 6)))
                if len(picks) == k:
                    break
        return picks

    def line(self, pos: int) -> str:
        """The prompt line of an indexed note (computed once)."""
        if pos not in self._lines:
            self._lines[pos] = candidate_line(self.notes[pos])
        return self._lines[pos]
