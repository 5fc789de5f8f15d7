"""Dangling links: find the note each one meant (only when confident) and rewrite it, journaled."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from typing import Callable

import numpy as np

from .errors import EnrichError
from .fsio import atomic_write
from .journal import Journal
from .links import Link
from .notes import BOM
from .related import link_id
from .vault import Vault, VaultNote

Progress = Callable[[int, int], None]

THRESHOLD = 0.85  # minimum similarity for a fuzzy match
MARGIN = 0.10  # the best match must beat the next note by this much
PREFIX_BONUS = 0.20  # same unique numbered prefix (`004-`)
PREFIX_PENALTY = 0.20  # a different numbered prefix when the target's number names another note
MIN_FUZZY_KEY = 4  # shorter targets must match exactly
DICE_MIN = 0.3  # bigram overlap a name needs before the (slower) similarity ratio is computed
MAX_FUZZY = 64  # names compared per target at most

_NUM_PREFIX = re.compile(r"^(\d+)[-_ .]")
_NOT_WORD = re.compile(r"[\W_]+")
_EXACT = {"id": 1.0, "title": 1.0, "alias": 1.0, "unnumbered": 0.95}


def match_key(text: str) -> str:
    """Fold a name for matching: NFKC, case, no extension, folder, spaces or punctuation."""
    t = unicodedata.normalize("NFKC", text).strip().replace("\\", "/").rsplit("/", 1)[-1]
    if t.lower().endswith(".md"):
        t = t[:-3]
    return _NOT_WORD.sub("", t.casefold())


def number_prefix(text: str) -> str | None:
    """The leading number of a name like `004-links`, or None."""
    m = _NUM_PREFIX.match(unicodedata.normalize("NFKC", text).strip().rsplit("/", 1)[-1])
    return m.group(1) if m else None


@dataclass(frozen=True)
class Match:
    """A note a dangling link probably meant."""

    id: str
    score: float
    reason: str  # id, title, alias, unnumbered, similar, numbered-prefix


@dataclass
class DanglingLink:
    """One dangling link, with the fix found for it (or why there is none)."""

    path: str
    line: int
    link: Link
    text: str
    match: Match | None = None
    why_not: str = ""
    new_text: str | None = None
    fixed: bool = False

    def to_json(self) -> dict[str, object]:
        """Machine-readable form."""
        m = self.match
        return {
            "path": self.path, "line": self.line, "link": self.text, "target": self.link.target,
            "match": None if m is None else {"id": m.id, "score": round(m.score, 3), "reason": m.reason},
            "new": self.new_text, "fixed": self.fixed, "why_not": self.why_not or None,
        }


@dataclass
class LinkReport:
    """What `enrich links` found and (with --fix) changed."""

    links: list[DanglingLink] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    fix: bool = False
    dry_run: bool = False

    @property
    def remaining(self) -> list[DanglingLink]:
        """Links still dangling after the fix (or that would be, in a dry run)."""
        return [d for d in self.links if not d.fixed]

    def to_json(self) -> dict[str, object]:
        """Machine-readable report."""
        return {
            "dangling": len(self.links), "fixable": sum(1 for d in self.links if d.new_text),
            "fixed": sum(1 for d in self.links if d.fixed), "remaining": len(self.remaining),
            "fix": self.fix, "dry_run": self.dry_run, "changed": self.changed,
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "links": [d.to_json() for d in self.links],
        }


class LinkMatcher:
    """Finds the note a link target most likely meant: exact names first, then close spellings."""

    def __init__(self, vault: Vault) -> None:
        self.vault = vault
        self.exact: dict[str, dict[str, str]] = {}  # key -> {link id: reason}
        self.names: list[tuple[str, str]] = []  # (key, link id) of every name of every note
        self.prefix_ids: dict[str, set[str]] = {}
        for vn in vault.notes:
            self._add(vn)
        self._grams: _GramIndex | None = None
        self._by_lid: dict[str, list[str]] | None = None
        self._cache: dict[str, tuple[Match | None, str]] = {}

    def _add(self, vn: VaultNote) -> None:
        """Index one note's names."""
        lid = link_id(self.vault, vn)
        if lid is None:
            return
        names = [(vn.id, "id"), (vn.title, "title"), *((a, "alias") for a in vn.aliases)]
        num = number_prefix(vn.id)
        if num:
            self.prefix_ids.setdefault(num, set()).add(lid)
            names.append((_NUM_PREFIX.sub("", vn.id, count=1), "unnumbered"))
        for name, reason in names:
            key = match_key(name)
            if key:
                self.exact.setdefault(key, {}).setdefault(lid, reason)
                self.names.append((key, lid))

    def match(self, target: str) -> tuple[Match | None, str]:
        """The confident match for a target, or None with the reason."""
        if target not in self._cache:
            self._cache[target] = self._match(target)
        return self._cache[target]

    def _match(self, target: str) -> tuple[Match | None, str]:
        """Exact name match when unique, else a fuzzy match with threshold and margin."""
        key = match_key(target)
        if not key:
            return None, "empty target"
        hits = self.exact.get(key, {})
        if len(hits) == 1:
            lid, reason = next(iter(hits.items()))
            return Match(lid, _EXACT[reason], reason), ""
        if len(hits) > 1:
            return None, "ambiguous: " + ", ".join(sorted(hits))
        if len(key) < MIN_FUZZY_KEY:
            return None, "no note with that name"
        return self._fuzzy(target, key)

    def _fuzzy(self, target: str, key: str) -> tuple[Match | None, str]:
        """Best close spelling, with numbered-prefix evidence, if it clears threshold and margin."""
        scores = self._similar(key)
        num = number_prefix(target)
        owners = self.prefix_ids.get(num, set()) if num else set()
        for lid in owners if len(owners) == 1 else ():
            scores[lid] = scores.get(lid, self._ratio(key, lid)) + PREFIX_BONUS
        if owners:
            for lid in scores:
                if lid not in owners:
                    scores[lid] -= PREFIX_PENALTY
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
        if not ranked or ranked[0][1] < THRESHOLD:
            return None, "no close match"
        if len(ranked) > 1 and ranked[0][1] - ranked[1][1] < MARGIN:
            return None, f"ambiguous: {ranked[0][0]}, {ranked[1][0]}"
        lid, score = ranked[0]
        reason = "numbered-prefix" if lid in owners and len(owners) == 1 else "similar"
        return Match(lid, min(score, 1.0), reason), ""

    def _similar(self, key: str) -> dict[str, float]:
        """Per note: the best similarity ratio of any of its names that could reach the threshold."""
        if self._grams is None:
            self._grams = _GramIndex([k for k, _ in self.names])
        low = THRESHOLD - PREFIX_BONUS
        sm = SequenceMatcher(autojunk=False)
        sm.set_seq2(key)
        out: dict[str, float] = {}
        for i in self._grams.near(key):
            other, lid = self.names[i]
            sm.set_seq1(other)
            if sm.real_quick_ratio() >= low and sm.quick_ratio() >= low:
                r = sm.ratio()
                if r >= low and r > out.get(lid, 0.0):
                    out[lid] = r
        return out

    def _ratio(self, key: str, lid: str) -> float:
        """The best similarity of a key to any name of one note."""
        if self._by_lid is None:
            self._by_lid = {}
            for k, i in self.names:
                self._by_lid.setdefault(i, []).append(k)
        names = self._by_lid.get(lid, [])
        return max((SequenceMatcher(None, key, k, autojunk=False).ratio() for k in names), default=0.0)


def _bigrams(key: str) -> set[str]:
    """Character bigrams of a key (a one-character key is its own gram)."""
    return {key[i : i + 2] for i in range(len(key) - 1)} or {key}


class _GramIndex:
    """Character-bigram postings over name keys: finds the few names worth a full similarity check."""

    def __init__(self, keys: list[str]) -> None:
        postings: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            for g in _bigrams(key):
                postings.setdefault(g, []).append(i)
        self.postings = {g: np.asarray(ids, dtype=np.int64) for g, ids in postings.items()}
        self.sizes = np.asarray([len(_bigrams(k)) for k in keys], dtype=np.float64)

    def near(self, key: str) -> list[int]:
        """Names sharing enough bigrams with key (Dice >= DICE_MIN), best first, at most MAX_FUZZY."""
        grams = _bigrams(key)
        lists = [self.postings[g] for g in grams if g in self.postings]
        if not lists:
            return []
        shared = np.bincount(np.concatenate(lists), minlength=len(self.sizes))
        dice = 2 * shared / (len(grams) + self.sizes)
        hits = np.flatnonzero(dice >= DICE_MIN)
        order = np.lexsort((hits, -dice[hits]))[:MAX_FUZZY]
        return [int(i) for i in hits[order]]


def rewrite(link: Link, new_target: str) -> str:
    """The link text pointing at new_target; heading, embed and alias kept, original text as the alias."""
    alias = link.alias if link.alias is not None else (None if link.embed else link.target)
    bang = "!" if link.embed else ""
    return f"{bang}[[{new_target}{link.heading}" + (f"|{alias}" if alias is not None else "") + "]]"


def find_dangling(vault: Vault, matcher: LinkMatcher | None = None, progress: Progress | None = None) -> list[DanglingLink]:
    """Every dangling link of the vault, with its confident match (if any) and the rewritten text."""
    matcher = matcher or LinkMatcher(vault)
    out: list[DanglingLink] = []
    for i, vn in enumerate(vault.notes):
        if progress:
            progress(i + 1, len(vault.notes))
        text = vn.note.text
        for ln in vault.dangling(vn):
            d = DanglingLink(vn.rel, text.count("\n", 0, ln.start) + 1, ln, text[ln.start : ln.end])
            d.match, d.why_not = matcher.match(ln.target)
            if d.match is not None:
                d.new_text = rewrite(ln, d.match.id)
            out.append(d)
    return out


def fixed_text(text: str, items: list[DanglingLink]) -> str:
    """Apply the rewrites of one note's links, last first so offsets stay valid."""
    for d in sorted(items, key=lambda d: d.link.start, reverse=True):
        if d.new_text is not None:
            text = text[: d.link.start] + d.new_text + text[d.link.end :]
    return text


def fix_links(vault: Vault, *, fix: bool = True, dry_run: bool = False, progress: Progress | None = None) -> LinkReport:
    """Find dangling links; with fix, rewrite the confident ones (atomic, journaled) unless dry_run."""
    report = LinkReport(find_dangling(vault, progress=progress), fix=fix, dry_run=dry_run)
    if not fix:
        return report
    by_path: dict[str, list[DanglingLink]] = {}
    for d in report.links:
        if d.new_text is not None:
            by_path.setdefault(d.path, []).append(d)
    journal = None if dry_run else Journal(vault.root, "links --fix")
    for vn in vault.notes:
        items = by_path.get(vn.rel)
        if items:
            _fix_note(vault, vn, items, journal, report)
    return report


def _fix_note(vault: Vault, vn: VaultNote, items: list[DanglingLink], journal: Journal | None, report: LinkReport) -> None:
    """Rewrite one note's fixable links, unless it was repaired in memory or changed on disk."""
    if vn.repaired or vn.note.render() != vn.raw:
        report.skipped.append((vn.rel, "holds mojibake repaired in memory only (run `enrich run` on it first)"))
        return
    new = ((BOM if vn.note.bom else "") + fixed_text(vn.note.text, items)).encode("utf-8")
    if journal is not None:
        if vn.path.read_bytes() != vn.raw:
            raise EnrichError(f"{vn.rel}: changed on disk during the run; nothing more written (enrich undo reverts)")
        journal.record(vn.path, vn.raw, new)
        atomic_write(vn.path, new, vault.root)
    for d in items:
        d.fixed = True
    report.changed.append(vn.rel)
