"""Build the request for one note: candidates, vocabulary, prompt, token budget, schema."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Sequence

from . import visible
from .config import Settings
from .prompts import PromptSet, load_prompts
from .providers.base import Message
from .related import Candidate, CandidateIndex
from .roles import KEY_POINTS
from .schema import OutputSpec, output_spec
from .tags import TagVocabulary
from .tokens import TokenCounter, fit_paragraphs
from .vault import Vault, VaultNote, no_gc_pauses

_CJK = re.compile(r"[\u3400-\u9fff]")
_MARKERS = re.compile(r"<<<\s*ARTICLE|ARTICLE\s*>>>", re.IGNORECASE)
_PARAS = re.compile(r"\n[ \t]*\n")
RANK_BLOCK = 32  # upcoming notes whose candidates are ranked together (see enrich.ranking)
BLOCK_CELLS = 1 << 20  # fewer in a vault so large that a block's score rows would pass this many cells


@dataclass(frozen=True)
class Content:
    """What decides whether a note needs a call: its language, prompts and the article text sent."""

    lang: str
    prompts: PromptSet
    text: str
    truncated: bool
    content_hash: str
    tokens: int | None  # tiktoken count of text; None when it was not needed (RequestBuilder.count_tokens)


@dataclass(frozen=True)
class Request:
    """Everything needed to enrich one note and to check the result."""

    vn: VaultNote
    lang: str
    prompts: PromptSet
    messages: list[Message]
    spec: OutputSpec
    content_hash: str
    candidates: list[Candidate]
    truncated: bool
    prompt_tokens: int | None  # None: not counted (RequestBuilder.count_tokens)


def note_language(vn: VaultNote, setting: str) -> str:
    """zh or en: the setting, or (auto) the language of the note's headings."""
    if setting != "auto":
        return setting
    sec = vn.note.section(KEY_POINTS)
    heads = sec.title if sec else " ".join(s.title for s in vn.note.sections)
    return "zh" if _CJK.search(heads) else "en"


def article_text(content: str) -> str:
    """Article text for the prompt: markup removed, paragraphs kept, delimiters neutralised."""
    paras = (visible.visible_text(p) for p in _PARAS.split(content))
    text = "\n\n".join(p for p in paras if p)
    return _MARKERS.sub("[article]", text) if "<<<" in text or ">>>" in text else text  # a marker holds one


class RequestBuilder:
    """Builds requests for notes of one vault with shared indexes."""

    def __init__(
        self, vault: Vault, settings: Settings, counter: TokenCounter, model: str, warn: Callable[[str], None] | None = None
    ) -> None:
        self.vault = vault
        self.settings = settings
        self.counter = counter
        self.count_tokens = True  # False: nothing reads the counts (a run with no token limit), so none are made
        self.model = model
        self.vocab = TagVocabulary.load(vault)
        self._prompts: dict[str, PromptSet] = {}
        self._vocab_line = ", ".join(self.vocab.top(40)) or "(none yet)"
        self._queue: CandidateQueue | None = None
        self._lines: dict[tuple[str, ...], str] = {}  # candidate (id, title, line) -> its prompt line

    @cached_property
    def index(self) -> CandidateIndex:
        """The vault's candidate index, built when the first request needs it (a run with nothing to do never does)."""
        with no_gc_pauses():  # many acyclic lists and arrays: a collection would only walk them
            return CandidateIndex(self.vault)

    def build_order(self, notes: Sequence[VaultNote]) -> None:
        """The order requests will be built in: a note's candidates are then ranked with the next ones."""
        self._queue = CandidateQueue(lambda: self.index, self.settings.candidates, notes)

    def candidates(self, vn: VaultNote) -> list[Candidate]:
        """The note's link candidates (from the queue of build_order, else ranked alone)."""
        if not self.settings.candidates:
            return []
        return self._queue.get(vn) if self._queue else self.index.candidates(vn, self.settings.candidates)

    def ranked_out(self) -> bool:
        """Every note of the last block ranked was taken: rank_next would rank the next block."""
        return self._queue is not None and self._queue.exhausted

    def rank_next(self) -> None:
        """Rank the next block of the build order, if the last one is used up (see CandidateQueue)."""
        if self._queue is not None:
            self._queue.rank_next()

    def prompts(self, lang: str) -> PromptSet:
        """The prompt set for a language (loaded and checked once)."""
        if lang not in self._prompts:
            self._prompts[lang] = load_prompts(lang, self.settings.prompts_dir)
        return self._prompts[lang]

    def content(self, vn: VaultNote) -> Content:
        """The cheap first half of a request: enough to decide whether the note needs a call."""
        lang = note_language(vn, self.settings.lang)
        text, truncated, n = self.counter_fit(article_text(vn.note.content_text()))
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
        return Content(lang, self.prompts(lang), text, truncated, digest, n)

    def build(self, vn: VaultNote, content: Content | None = None) -> Request:
        """Build the request for one note (candidates, prompt, schema, token count)."""
        c = content or self.content(vn)
        return self.assemble(vn, c, *self.parts(vn, c))

    def parts(self, vn: VaultNote, c: Content) -> tuple[list[Message], list[Candidate], int | None]:
        """The costly, picklable part of a request: its messages, candidates and prompt tokens (if counted)."""
        cands = self.candidates(vn)
        lines, values = self._values(vn, c, cands)
        messages = c.prompts.render(values)
        return messages, cands, self._prompt_tokens(c, messages, values, lines) if self.count_tokens else None

    def prompt_tokens(self, vn: VaultNote, c: Content, messages: list[Message], cands: list[Candidate]) -> int:
        """The prompt tokens of a request built without counting them."""
        lines, values = self._values(vn, c, cands)
        return self._prompt_tokens(c, messages, values, lines)

    def _values(self, vn: VaultNote, c: Content, cands: list[Candidate]) -> tuple[list[str], dict[str, str]]:
        """The candidate lines and the values the user prompt is filled with."""
        lines = [self._line(x) for x in cands]
        values = {
            "title": _one_line(vn.title),
            "content": c.text,
            "candidates": "\n".join(lines) or "(none)",
            "vocabulary": self._vocab_line,
            "max_new_tags": str(self.settings.max_new_tags),
            "note_id": vn.id,
            "lang": c.lang,
        }
        return lines, values

    def _line(self, cand: Candidate) -> str:
        """A candidate's line in the prompt (made once per run: a note is a candidate of many)."""
        head = cand[:3]
        line = self._lines.get(head)
        if line is None:
            line = self._lines[head] = f"{cand.id}: {_one_line(cand.title)}" + (f" — {cand.line}" if cand.line else "")
        return line

    def assemble(
        self, vn: VaultNote, c: Content, messages: list[Message], cands: list[Candidate], tokens: int | None
    ) -> Request:
        """The request from its parts (built here or ahead in another process) and the note's schema."""
        spec = output_spec([x.id for x in cands], vn.id, c.prompts.example_points)
        return Request(vn, c.lang, c.prompts, messages, spec, c.content_hash, cands, c.truncated, tokens)

    def _prompt_tokens(self, c: Content, messages: list[Message], values: dict[str, str], lines: list[str]) -> int:
        """Prompt tokens as Counter.count_messages counts them, without tokenising the user message again.

        The system prompt and the user template without its values are counted once per run; each value's
        tokens are known from planning (article) or counted once per run (title, vocabulary, candidate lines,
        constants). A seam between a value and the template may merge a token: within 1% of a full count.
        """
        cached = self.counter.count_cached
        article = c.tokens if c.tokens is not None else self.counter.count(c.text)
        known = {"content": article, "vocabulary": cached(self._vocab_line)}
        if lines:
            known["candidates"] = sum(map(cached, lines))  # a line's "\n" mostly merges into its end
        skeleton, names = c.prompts.user_skeleton
        user = cached(skeleton) + sum(known[k] if k in known else cached(values[k]) for k in names)
        return cached(messages[0]["content"]) + 4 + user + 4 + 3

    def counter_fit(self, text: str) -> tuple[str, bool, int | None]:
        """Fit the article into --max-input-tokens, keeping whole paragraphs from the start (and its tokens).

        Without count_tokens, an article known to fit is not counted: one of at most that many UTF-8 bytes (a
        token is never shorter than one byte), or one whose bound (tokenbound) is within the budget.
        """
        budget = self.settings.max_input_tokens
        if not self.count_tokens and (len(text.encode("utf-8")) <= budget or self.counter.surely_within(text, budget)):
            return text, False, None
        return fit_paragraphs(text, self.counter, budget)


def rank_block(indexed: int) -> int:
    """How many notes are ranked together in a vault of this many indexed notes (RANK_BLOCK, BLOCK_CELLS)."""
    return max(1, min(RANK_BLOCK, BLOCK_CELLS // max(indexed, 1)))


class CandidateQueue:
    """Link candidates of notes in the order their requests are built, ranked a block at a time.

    A block costs about what one note ranked alone did (enrich.ranking). It is ranked when one of its notes is
    first needed, or ahead by rank_next, which the pipeline calls after the last note of a block left: the
    calls are then out, and the loop has nothing else to do until their answers come.
    """

    def __init__(self, index: Callable[[], CandidateIndex], k: int, notes: Sequence[VaultNote]) -> None:
        self._index, self._k = index, k
        self._order = list(notes)
        self._at = {vn.rel: i for i, vn in enumerate(self._order)}
        self._ranked: dict[str, list[Candidate]] = {}  # the notes of the last block not taken yet
        self._next = 0  # the position after the last block

    @property
    def exhausted(self) -> bool:
        """Every note ranked was taken, and some are left."""
        return not self._ranked and self._next < len(self._order)

    def get(self, vn: VaultNote) -> list[Candidate]:
        """The note's candidates: ranked with its block, or alone when it is not in the order."""
        if vn.rel not in self._ranked:
            at = self._at.get(vn.rel)
            if at is None:
                return self._index().candidates(vn, self._k)
            self._rank(at)
        return self._ranked.pop(vn.rel)

    def rank_next(self) -> None:
        """Rank the block after the last one, if that one is used up."""
        if self.exhausted:
            self._rank(self._next)

    def _rank(self, at: int) -> None:
        """Rank the block starting at a position (what is left of the last block is dropped)."""
        index = self._index()
        block = self._order[at : at + rank_block(len(index.notes))]
        self._ranked = dict(zip((vn.rel for vn in block), index.candidates_many(block, self._k)))
        self._next = at + len(block)


def _one_line(text: str) -> str:
    """Collapse whitespace so a value stays on one prompt line."""
    return " ".join(str(text).split())[:200]
