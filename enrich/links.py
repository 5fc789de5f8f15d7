"""Wikilinks: find them outside code, and resolve them the way Obsidian does."""

from __future__ import annotations

import re
from dataclasses import dataclass

_WIKILINK = re.compile(r"(!?)\[\[([^\[\]\n|#^]*)((?:[#^][^\[\]\n|]*)?)(?:\|([^\[\]\n]*))?\]\]")
_FENCE = re.compile(r"^[ ]{0,3}(`{3,}|~{3,})[^\n]*\n.*?(?:^[ ]{0,3}\1[ \t]*$|\Z)", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"(`+)(?!`).+?(?<!`)\1", re.DOTALL)


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


def _mask(text: str) -> str:
    """Blank out fenced and inline code so links inside code are not links."""
    def blank(m: re.Match[str]) -> str:
        return re.sub(r"[^\n]", " ", m.group(0))

    if "`" not in text and "~~~" not in text:
        return text
    return _INLINE_CODE.sub(blank, _FENCE.sub(blank, text))


def find_links(text: str) -> list[Link]:
    """Return every wikilink in text, in order, ignoring code blocks and code spans."""
    if "[[" not in text:
        return []
    masked = _mask(text)
    out: list[Link] = []
    for m in _WIKILINK.finditer(masked):
        target = text[m.start(2) : m.end(2)].strip()
        if not target and not m.group(3):
            continue
        alias = text[m.start(4) : m.end(4)] if m.group(4) is not None else None
        out.append(Link(target, m.group(3), alias, m.group(1) == "!", m.start(), m.end()))
    return out


def is_attachment(target: str) -> bool:
    """True for embeds of non-note files (images, PDFs...), which are not note links."""
    name = target.rsplit("/", 1)[-1]
    return "." in name and not name.lower().endswith(".md")
