"""Wikilinks: find them outside code, and resolve them the way Obsidian does."""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass

# Starts with the literal `[[` so the regex engine can search for it fast; a `!` before it makes an embed.
_WIKILINK = re.compile(r"\[\[([^\[\]\n|#^]*)((?:[#^][^\[\]\n|]*)?)(?:\|([^\[\]\n]*))?\]\]")
_FENCE_OPEN = re.compile(r"^[ ]{0,3}(?:(?:[-*+]|\d{1,9}[.)])[ \t]+)?(`{3,}|~{3,})[^\n]*", re.MULTILINE)  # as notes.py
_FENCE_CLOSE = re.compile(r"[ ]{0,3}(`{3,}|~{3,})[ \t]*\r?")
_INLINE_CODE = re.compile(r"(`+)(?!`).+?(?<!`)\1", re.DOTALL)
_BLANK_LINE = re.compile(r"\n[ \t]*\r?\n")
_FAR = 1 << 62


@dataclass(frozen=True)
class Link:
    """One `[[target#heading|alias]]` or `![[embed]]` occurrence."""

    target: str
    heading: str  # "#Heading" or "^block", or ""
    alias: str | None
    embed: bool
    start: int
    end: int

    @property
    def key(self) -> str:
        """The target as Obsidian matches it: no extension for notes, case-folded."""
        return link_key(self.target)


def link_key(target: str) -> str:
    """Normalise a link target for lookup (strip .md, backslashes, case)."""
    t = target.strip().replace("\\", "/")
    if t.lower().endswith(".md"):
        t = t[:-3]
    return t.casefold()


def _fences(text: str) -> list[tuple[int, int]]:
    """Spans of fenced code blocks (an unclosed fence runs to the end), in order."""
    spans: list[tuple[int, int]] = []
    pos = 0
    while (m := _FENCE_OPEN.search(text, pos)) is not None:
        fence, end = m.group(1), len(text)
        line = m.end() + 1
        while line < len(text):
            nl = text.find("\n", line)
            stop = len(text) if nl < 0 else nl
            c = _FENCE_CLOSE.fullmatch(text, line, stop)
            if c and c.group(1)[0] == fence[0] and len(c.group(1)) >= len(fence):
                end = stop
                break
            line = stop + 1
        spans.append((m.start(), end))
        pos = end + 1
    return spans


def _inside(spans: list[tuple[int, int]], at: int) -> bool:
    """True when offset `at` lies in one of the sorted, disjoint spans."""
    i = bisect_right(spans, (at, _FAR)) - 1
    return i >= 0 and spans[i][0] <= at < spans[i][1]


class _CodeSpans:
    """Inline code spans, found per paragraph (code spans never cross a blank line) on demand."""

    def __init__(self, text: str, fences: list[tuple[int, int]]) -> None:
        self.text, self.fences = text, fences
        self.breaks = [m.start() for m in _BLANK_LINE.finditer(text)] if "`" in text else []
        self.cache: dict[int, list[tuple[int, int]]] = {}

    def covers(self, at: int) -> bool:
        """True when offset `at` is inside an inline code span."""
        if "`" not in self.text:
            return False
        i = bisect_right(self.breaks, at)
        if i not in self.cache:
            start = self.breaks[i - 1] if i else 0
            end = self.breaks[i] if i < len(self.breaks) else len(self.text)
            self.cache[i] = self._spans(start, end)
        return _inside(self.cache[i], at)

    def _spans(self, start: int, end: int) -> list[tuple[int, int]]:
        """Code spans between start and end, with fenced blocks blanked out first."""
        chunk = self.text[start:end]
        for fs, fe in self.fences:
            if fs < end and fe > start:
                a, b = max(fs, start) - start, min(fe, end) - start
                chunk = chunk[:a] + " " * (b - a) + chunk[b:]
        return [(start + m.start(), start + m.end()) for m in _INLINE_CODE.finditer(chunk)]


def find_links(text: str) -> list[Link]:
    """Return every wikilink in text, in order, ignoring fenced code blocks and code spans."""
    if "[[" not in text:
        return []
    has_code = "`" in text or "~~~" in text
    fences = _fences(text) if has_code else []
    code = _CodeSpans(text, fences) if has_code else None
    out: list[Link] = []
    for m in _WIKILINK.finditer(text):
        embed = m.start() > 0 and text[m.start() - 1] == "!"
        start = m.start() - embed
        if fences and _inside(fences, start):
            continue
        if code is not None and code.covers(start):
            continue
        target = m.group(1).strip()
        if not target and not m.group(2):
            continue
        out.append(Link(target, m.group(2), m.group(3), embed, start, m.end()))
    return out


def is_attachment(target: str) -> bool:
    """True for embeds of non-note files (images, PDFs...), which are not note links."""
    name = target.rsplit("/", 1)[-1]
    return "." in name and not name.lower().endswith(".md")
