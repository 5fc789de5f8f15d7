"""What a reader sees of note content (markup removed), and whether content is usable at all.

Unusable content is never sent to a model: compressed/binary bytes decoded as text, HTML with no text, or
text too short to enrich.
"""

from __future__ import annotations

import html
import itertools
import re

__all__ = ["looks_binary", "unusable_reason", "visible_text"]

_COMMENT_RE = re.compile(r"<!--.*?-->", re.DOTALL)
_BLOCK_RE = re.compile(r"<(script|style)\b.*?</\1\s*>", re.DOTALL | re.IGNORECASE)
_TAG_RE = re.compile(r"</?[A-Za-z][^>]*>")
_MD_IMAGE_RE = re.compile(r"!\[[^\]]*\]\([^)]*\)")
_MD_LINK_RE = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_WIKILINK_RE = re.compile(r"\[\[([^\]|]*)(?:\|([^\]]*))?\]\]")
_URL_RE = re.compile(r"(?:https?|ftp)://\S+|www\.\S+")
_LINE_MARK_RE = re.compile(
    r"(?m)^[ \t]{0,3}(?:#{1,6}[ \t]+|>[ \t]?|[-*+][ \t]+|\d+\.[ \t]+)"
)
_EMPHASIS_RE = re.compile(r"\*\*|__|~~|`+")
_LETTER_RE = re.compile(r"[^\W\d_]")
_HAS_TAG_RE = re.compile(r"</?[A-Za-z][^>]*>|&(?:#\d+|[A-Za-z]+);")
# gzip magic 1F 8B read as latin-1 / utf-8 with replacement / cp1252; zlib 78 9C.
_BINARY_MAGIC = ("\x1f\x8b", "\x1f\ufffd", "\x1f\u2039", "x\ufffd")
# U+FFFD and control chars other than tab, newline and carriage return.
_BINARY_CHAR_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffd]")
_BINARY_SHARE = 0.05


def visible_text(content: str) -> str:
    """Return content with HTML/Markdown markup, image tags and URLs removed."""
    text = content
    if "<" in text:  # each pass runs only when the text can match it
        text = _TAG_RE.sub(" ", _BLOCK_RE.sub(" ", _COMMENT_RE.sub(" ", text)))
    if "](" in text:
        text = _MD_IMAGE_RE.sub(" ", text)
    if "[[" in text:
        text = _WIKILINK_RE.sub(lambda m: m.group(2) or m.group(1), text)
    if "](" in text:
        text = _MD_LINK_RE.sub(r"\1", text)
    if "://" in text or "www." in text:
        text = _URL_RE.sub(" ", text)
    text = _EMPHASIS_RE.sub("", _LINE_MARK_RE.sub("", text))
    text = html.unescape(text)
    return " ".join(text.split())


_SAMPLE_PREFIX = 8000


def looks_binary(content: str) -> bool:
    """Tell whether content is compressed/binary bytes decoded as text."""
    body = content.lstrip(" \t\r\n")[:_SAMPLE_PREFIX]  # compressed bytes show from the first line
    if body.startswith(_BINARY_MAGIC):
        return True
    bad = len(_BINARY_CHAR_RE.findall(body))
    return bad >= 4 and bad >= _BINARY_SHARE * len(body)


def _letters(text: str, enough: int) -> int:
    """Count letters in text, stopping once `enough` are found."""
    return sum(1 for _ in itertools.islice(_LETTER_RE.finditer(text), enough))


def unusable_reason(content: str, *, min_chars: int = 80) -> str | None:
    """Say why article content is unusable ('binary', 'html-without-text', 'too-short')."""
    if looks_binary(content):
        return "binary"
    cut = max(content.rfind("\n", 0, _SAMPLE_PREFIX), content.rfind(">", 0, _SAMPLE_PREFIX))
    long_enough = len(content) > _SAMPLE_PREFIX and cut > 0  # a long note: its start (cut between tags) usually decides
    if long_enough and _letters(visible_text(content[: cut + 1]), min_chars) >= min_chars:
        return None
    letters = _letters(visible_text(content), max(min_chars, 1))
    if letters == 0 and _HAS_TAG_RE.search(content):
        return "html-without-text"
    if letters < min_chars:
        return "too-short"
    return None
