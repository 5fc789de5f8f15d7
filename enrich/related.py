"""Related-note candidates: BM25 over note text plus graph signals (shared tags, shared links, backlinks)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import numpy.typing as npt
from scipy import sparse

from . import repair
from .links import is_attachment
from .roles import KEY_POINTS, default_roles
from .tags import fold_tag
from .vault import Vault, VaultNote

FloatArray = npt.NDArray[np.float32]

CONTENT_TOKENS = 300  # tokens of article text indexed per note
CONTENT_CHARS = 4000  # raw characters looked at to find them
LINE_CHARS = 100
W_TEXT, W_TAGS, W_LINKS, W_BACKLINK = 1.0, 0.35, 0.35, 0.25

_TOKEN = re.compile(r"[a-z0-9]+(?:['’][a-z]+)?|[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])")
_BAD_ID_CHARS = re.compile(r"[\[\]|#^]")
_STOPWORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have having he
    her here hers him his how i if in into is it its itself just let me more most my no nor not now of off on once
    only or other our ours out over own same she should so some such than that the their theirs them then there
    these they this those through to too under until up very was we were what when where which while who whom why
    will with would you your yours via use used using one two new s t don isn aren http https www com html""".split()
)


@dataclass(frozen=True)
class Candidate:
    """One note the model may link to."""

    id: str  # file stem (what [[id]] resolves to)
    title: str
    line: str  # one line for the prompt: first key point or first sentence
    score: float


def _stem(word: str) -> str:
    """Fold simple English plurals (agents -> agent, libraries -> library)."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def tokenize(text: str, limit: int | None = None) -> list[str]:
    """Lowercase English words without stopwords, and CJK character bigrams."""
    out: list[str] = []
    for m in _TOKEN.finditer(text.lower()):
        w = m.group(0)
        if w[0] < "\u3400":
            if len(w) > 1 and w not in _STOPWORDS and not w.isdigit():
                out.append(_stem(w))
        elif len(w) == 1:
            out.append(w)
        else:
            out.extend(w[i : i + 2] for i in range(len(w) - 1))
        if limit is not None and len(out) >= limit:
            return out[:limit]
    return out


def key_points(vn: VaultNote) -> list[str]:
    """The note's key-point bullets that are not template placeholders."""
    sec = vn.note.section(KEY_POINTS)
    if sec is None:
        return []
    roles = default_roles()
    lines = (re.sub(r"^\s*(?:[-*+]|\d+[.)])\s+", "", ln).strip() for ln in vn.note.body(sec).splitlines())
    return [ln for ln in lines if ln and not roles.is_placeholder_line(ln)]


def _content(vn: VaultNote) -> str:
    """The visible start of the article, or '' when it is binary."""
    raw = vn.note.content_text()[:CONTENT_CHARS]
    if repair.unusable_reason(raw, min_chars=0) == "binary":
        return ""
    return repair.visible_text(raw)


def note_tokens(vn: VaultNote) -> list[str]:
    """Tokens indexed for a note: title (twice), aliases, tags, key points, start of content."""
    head = " ".join([vn.title, vn.title, *vn.aliases, *(t.replace("-", " ").replace("_", " ") for t in vn.tags)])
    body = " ".join(key_points(vn)) + " " + _content(vn)
    return tokenize(head) + tokenize(body, CONTENT_TOKENS)


def candidate_line(vn: VaultNote) -> str:
    """One prompt line: the first key point, else the first sentence of the content."""
    points = key_points(vn)
    text = repair.visible_text(points[0]) if points else _content(vn)
    if not points and text:
        text = _SENTENCE_END.split(text, maxsplit=1)[0]
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
    """A binary note x feature matrix with IDF weights (for tags and link targets)."""

    def __init__(self, rows: Sequence[Iterable[str]]) -> None:
        self.vocab: dict[str, int] = {}
        indptr, indices = [0], []
        for row in rows:
            ids = sorted({self.vocab.setdefault(f, len(self.vocab)) for f in row})
            indices.extend(ids)
            indptr.append(len(indices))
        n, v = len(rows), max(len(self.vocab), 1)
        data = np.ones(len(indices), dtype=np.float32)
        self.matrix = sparse.csr_matrix((data, np.array(indices, dtype=np.int32), np.array(indptr)), shape=(n, v))
        df = np.asarray(self.matrix.sum(axis=0)).ravel()
        self.idf = np.where(df > 1, np.log1p(n / np.maximum(df, 1)), 0.0).astype(np.float32)

    def similarity(self, features: Iterable[str]) -> FloatArray:
        """Per note: IDF-weighted share of these features it also has (0..1)."""
        ids = [self.vocab[f] for f in set(features) if f in self.vocab]
        total = float(self.idf[ids].sum()) if ids else 0.0
        if total <= 0.0:
            return np.zeros(self.matrix.shape[0], dtype=np.float32)
        weights = np.zeros(self.matrix.shape[1], dtype=np.float32)
        weights[ids] = self.idf[ids]
        return np.asarray(self.matrix @ weights, dtype=np.float32) / np.float32(total)


class CandidateIndex:
    """Ranks the notes of a vault as link candidates for one note; built once per run."""

    def __init__(self, vault: Vault) -> None:
        import bm25s

        self.vault = vault
        self.notes = list(vault.notes)
        self._pos = {id(vn): i for i, vn in enumerate(self.notes)}
        self._ids = [link_id(vault, vn) for vn in self.notes]
        self._tokens = [note_tokens(vn) for vn in self.notes]
        self._bm25 = bm25s.BM25()
        if self.notes:
            self._bm25.index(self._tokens, show_progress=False)
        self._vocab: dict[str, int] = dict(self._bm25.vocab_dict) if self.notes else {}
        self._tags = _Features([self._tag_keys(vn) for vn in self.notes])
        self._links = _Features([_link_keys(vault, vn) for vn in self.notes])
        self._backlinks = self._backlink_lists()
        self._lines: dict[int, str] = {}

    @staticmethod
    def _tag_keys(vn: VaultNote) -> set[str]:
        """The folded tags of a note."""
        return {fold_tag(t) for t in vn.tags if fold_tag(t)}

    def _backlink_lists(self) -> dict[str, list[int]]:
        """For each note rel path: positions of notes linking to it."""
        out: dict[str, list[int]] = {}
        for i, vn in enumerate(self.notes):
            for key in _link_keys(self.vault, vn):
                if key.startswith("n:"):
                    out.setdefault(key[2:], []).append(i)
        return out

    def _text_scores(self, tokens: list[str]) -> FloatArray:
        """BM25 scores of every note for a note's tokens, scaled to 0..1."""
        query = [t for t in dict.fromkeys(tokens) if t in self._vocab]
        if not query:
            return np.zeros(len(self.notes), dtype=np.float32)
        scores = np.asarray(self._bm25.get_scores(query), dtype=np.float32)
        top = float(scores.max())
        return scores / np.float32(top) if top > 0 else scores

    def scores(self, vn: VaultNote) -> FloatArray:
        """Combined score of every indexed note as a candidate for vn."""
        pos = self._pos.get(id(vn))
        tokens = self._tokens[pos] if pos is not None else note_tokens(vn)
        total = W_TEXT * self._text_scores(tokens)
        total += W_TAGS * self._tags.similarity(self._tag_keys(vn))
        total += W_LINKS * self._links.similarity(_link_keys(self.vault, vn))
        back = self._backlinks.get(vn.rel, [])
        if back:
            total[back] += W_BACKLINK
        return total

    def _excluded(self, vn: VaultNote) -> set[int]:
        """Positions that may never be candidates: the note itself and notes it links to."""
        out = {i for i, other in enumerate(self.notes) if other is vn} if id(vn) not in self._pos else {self._pos[id(vn)]}
        for ln in vn.links:
            hit = self.vault.resolve(ln.target) if ln.target else None
            if hit is not None and id(hit) in self._pos:
                out.add(self._pos[id(hit)])
        return out

    def candidates(self, vn: VaultNote, k: int = 15) -> list[Candidate]:
        """The top-k candidates for vn: score descending, then id; never vn or notes it already links to."""
        if k <= 0 or not self.notes:
            return []
        total = self.scores(vn)
        excluded = self._excluded(vn)
        want = min(len(total), k + len(excluded))
        top = np.argpartition(-total, want - 1)[:want] if want < len(total) else np.arange(len(total))
        if len(top):
            top = np.flatnonzero(total >= max(float(total[top].min()), 1e-9))
        picks = [
            (round(float(total[i]), 6), str(self._ids[i]), int(i))
            for i in top
            if i not in excluded and self._ids[i] is not None and self._ids[i] != vn.id
        ]
        picks.sort(key=lambda p: (-p[0], p[1]))
        return [Candidate(cid, self.notes[i].title, self.line(i), s) for s, cid, i in picks[:k]]

    def line(self, pos: int) -> str:
        """The prompt line of an indexed note (computed once)."""
        if pos not in self._lines:
            self._lines[pos] = candidate_line(self.notes[pos])
        return self._lines[pos]
