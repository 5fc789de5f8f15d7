"""Related-note candidates: BM25 over note text plus graph signals (shared tags, shared links, backlinks)."""

from __future__ import annotations

import itertools
import operator
import re
from collections import defaultdict
from typing import Any, NamedTuple, Sequence

import numpy as np

from . import visible
from .links import is_attachment
from .ranking import Features, FloatArray, TextScorer, top_k
from .roles import KEY_POINTS, default_roles
from .tags import fold_tag, singular
from .vault import Vault, VaultNote

CONTENT_TOKENS = 300  # tokens of article text indexed per note
CONTENT_CHARS = 2500  # raw characters looked at to find them
BINARY_PROBE = 400  # characters checked for compressed/binary content
LINE_CHARS = 100
W_TEXT, W_TAGS, W_LINKS, W_BACKLINK = 1.0, 0.35, 0.35, 0.25

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


_WORDS: dict[str | bytes, str] = {}
_MEMO_LIMIT = 1_000_000


_WORD_BYTES = bytes(c if 48 <= c <= 57 or 97 <= c <= 122 else c + 32 if 65 <= c <= 90 else 32 for c in range(256))
_WORD_TEXT = {c: _WORD_BYTES[c] for c in range(128) if _WORD_BYTES[c] != c}  # the same mapping for str.translate
_LOWER_TO_ASCII = ("\u0130", "\u212a")  # İ and the Kelvin sign: the only letters whose lowercase holds a-z


def _raw_words(text: str) -> list[str] | list[bytes]:
    """The runs of a-z and 0-9 in text lowercased: by bytes.translate and split, far faster than a regex."""
    if text.isascii():
        return text.translate(_WORD_TEXT).split()
    if any(c in text for c in _LOWER_TO_ASCII):
        return _WORD.findall(text.lower())
    return text.encode("utf-8", "surrogatepass").translate(_WORD_BYTES).split()  # other bytes (>= 0x80) are spaces


def _words(words: list[Any], limit: int | None) -> list[str]:
    """English tokens of raw words (_raw_words; normalisation memoised per word)."""
    if limit is not None:
        words = words[: limit * 2]
    missing = set(words).difference(_WORDS)
    if len(_WORDS) + len(missing) > _MEMO_LIMIT:
        _WORDS.clear()
        missing = set(words)
    for w in missing:
        _WORDS[w] = _word(w if isinstance(w, str) else w.decode("ascii"))
    out = list(filter(None, map(_WORDS.__getitem__, words)))
    return out if limit is None else out[:limit]


def _cjk_tokens(runs: list[str], limit: int | None) -> list[str]:
    """Character bigrams of each CJK run (a lone character stands for itself)."""
    out: list[str] = []
    for run in runs:
        if len(run) == 1:
            out.append(run)
        else:
            out.extend(map(operator.add, run[:-1], run[1:]))
        if limit is not None and len(out) >= limit:
            return out[:limit]
    return out


def tokenize(*parts: str, limit: int | None = None) -> list[str]:
    """Lowercase English words without stopwords, then CJK character bigrams (lone characters as is).

    Parts are tokenised as if joined by newlines (no token spans one), each scanned for CJK only when it is not
    ASCII. With a limit, at most `limit` English and `limit` CJK tokens are kept (from the start).
    """
    words = _words([w for p in parts for w in _raw_words(p)], limit)
    runs = [run for p in parts if not p.isascii() for run in _CJK_RUN.findall(p)]
    return words + _cjk_tokens(runs, limit) if runs else words


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
    body = [_key_point_text(vn), _raw_content(vn)]
    body = [_MARKUP.sub(" ", p) if "<" in p or "](" in p or "://" in p else p for p in body]
    return title + title + names + tokenize(*body, limit=CONTENT_TOKENS)


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


class CandidateIndex:
    """Ranks the notes of a vault as link candidates for other notes; built once per run."""

    def __init__(self, vault: Vault, dense_df: int | None = None) -> None:
        self.vault = vault
        self.notes = list(vault.notes)
        self._pos = {vn.rel: i for i, vn in enumerate(self.notes)}
        self._ids = [link_id(vault, vn) for vn in self.notes]
        self._id_pos = {cid: i for i, cid in enumerate(self._ids) if cid is not None}
        self._no_id = np.asarray([i for i, cid in enumerate(self._ids) if cid is None], dtype=np.int64)
        order = sorted(range(len(self._ids)), key=lambda i: str(self._ids[i]))
        self._id_rank = np.empty(len(order), dtype=np.int64)
        self._id_rank[order] = np.arange(len(order))
        ids: defaultdict[str, int] = defaultdict(itertools.count().__next__)
        ids[""]  # id 0: the empty token (as bm25s reserves it)
        self._tokens = [list(map(ids.__getitem__, note_tokens(vn))) for vn in self.notes]
        self._vocab = dict(ids)
        self.text = TextScorer(self._tokens, len(self._vocab), dense_df)
        self._link_sets = link_keys = [_link_keys(vault, vn) for vn in self.notes]
        self._tag_sets = [self._tag_keys(vn) for vn in self.notes]
        self._tags = Features(self._tag_sets)
        self._links = Features(link_keys)
        self._backlinks = self._backlink_lists(link_keys)
        self._heads: dict[int, tuple[str, str, str]] = {}

    @staticmethod
    def _tag_keys(vn: VaultNote) -> set[str]:
        """The folded tags of a note."""
        return set(filter(None, map(fold_tag, vn.tags)))

    @staticmethod
    def _backlink_lists(link_keys: list[set[str]]) -> dict[str, list[int]]:
        """For each note rel path: positions of notes linking to it."""
        out: dict[str, list[int]] = {}
        for i, keys in enumerate(link_keys):
            for key in keys:
                if key.startswith("n:"):
                    out.setdefault(key[2:], []).append(i)
        return out

    def _features(self, vn: VaultNote) -> tuple[list[int], set[str], set[str]]:
        """A note's token ids, tags and link keys: what the index holds for an indexed note, else computed."""
        pos = self._pos.get(vn.rel)
        if pos is not None:
            return self._tokens[pos], self._tag_sets[pos], self._link_sets[pos]
        tokens = [i for i in map(self._vocab.get, note_tokens(vn)) if i is not None]  # unknown tokens dropped
        return tokens, self._tag_keys(vn), _link_keys(self.vault, vn)

    def scores_many(self, vns: Sequence[VaultNote]) -> FloatArray:
        """Combined score of every indexed note as a candidate, one row per note of vns."""
        tokens, tags, links = zip(*map(self._features, vns)) if vns else ((), (), ())
        docs = [self._pos[vn.rel] for vn in vns if vn.rel in self._pos]
        # indexed notes: their query terms were chosen when the index was built
        terms = self.text.doc_terms(docs) if len(docs) == len(vns) else self.text.query_terms(tokens)
        total = W_TEXT * self.text.scores(*terms, len(vns))
        total += W_TAGS * self._tags.similarity(tags)
        total += W_LINKS * self._links.similarity(links)
        for row, vn in enumerate(vns):
            back = self._backlinks.get(vn.rel)
            if back:
                total[row, back] += W_BACKLINK
        return total

    def scores(self, vn: VaultNote) -> FloatArray:
        """Combined score of every indexed note as a candidate for vn."""
        row: FloatArray = self.scores_many([vn])[0]
        return row

    def _excluded(self, vn: VaultNote) -> set[int]:
        """Positions that may never be candidates: the note itself, notes it links to, another note with its id."""
        hits = [vn] + [self.vault.resolve(ln.target) for ln in vn.links if ln.target]
        out = {self._pos[h.rel] for h in hits if h is not None and h.rel in self._pos}
        same = self._id_pos.get(vn.id)
        return out if same is None else out | {same}

    def candidates_many(self, vns: Sequence[VaultNote], k: int = 15) -> list[list[Candidate]]:
        """The top-k candidates of each note, ranked together: score descending, then id; never the note, a note
        it already links to, or a note without a link id."""
        if k <= 0 or not self.notes or not vns:
            return [[] for _ in vns]
        total = self.scores_many(vns)
        total[:, self._no_id] = -np.inf
        for row, vn in enumerate(vns):
            total[row, list(self._excluded(vn))] = -np.inf
        make, head = Candidate._make, self._head
        return [[make(head(i) + (score,)) for i, score in picks] for picks in top_k(total, k, self._id_rank)]

    def candidates(self, vn: VaultNote, k: int = 15) -> list[Candidate]:
        """The top-k candidates for vn (see candidates_many)."""
        return self.candidates_many([vn], k)[0]

    def _head(self, pos: int) -> tuple[str, str, str]:
        """An indexed note's id, title and prompt line (computed once)."""
        head = self._heads.get(pos)
        if head is None:
            head = self._heads[pos] = (str(self._ids[pos]), self.notes[pos].title, candidate_line(self.notes[pos]))
        return head
