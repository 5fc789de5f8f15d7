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
# The URL, line-mark and emphasis patterns start with a literal (or one of a few literals: "``*", not "`+"), so sre
# scans for where a match can start instead of trying every position; the passes skip branches the text cannot match.
_URL_RE = re.compile(r"https?://\S+|ftp://\S+|www\.\S+")
_HTTP_RE = re.compile(r"https?://\S+")  # _URL_RE when the text has neither "ftp://" nor "www."
_WWW_RE = re.compile(r"www\.\S+")  # _URL_RE when the text has no "://"
_LINE_MARK = r"[ \t]{0,3}(?:#{1,6}[ \t]+|>[ \t]?|[-*+][ \t]+|\d+\.[ \t]+)"  # at a line start; never spans "\n"
_FIRST_MARK_RE = re.compile(_LINE_MARK)  # the mark on the first line
_LINE_MARK_RE = re.compile("\n" + _LINE_MARK)  # a mark on a later line, with the newline before it
_EMPHASIS_RE = re.compile(r"\*\*|__|~~|``*")
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
        text = _strip_urls(text)
    text = html.unescape(_strip_emphasis(_strip_line_marks(text)))
    return " ".join(text.split())


def _strip_urls(text: str) -> str:
    """Replace each URL with a space, using only the _URL_RE branches the text can match."""
    if "www." not in text:
        return _HTTP_RE.sub(" ", text) if "ftp://" not in text else _URL_RE.sub(" ", text)
    return _WWW_RE.sub(" ", text) if "://" not in text else _URL_RE.sub(" ", text)


def _strip_line_marks(text: str) -> str:
    """Remove heading, quote and list marks at line starts (a mark never contains a newline)."""
    first = _FIRST_MARK_RE.match(text)
    if first:
        text = text[first.end() :]
    return _LINE_MARK_RE.sub("\n", text) if "\n" in text else text


def _strip_emphasis(text: str) -> str:
    """Remove **, __, ~~ (left to right, as one _EMPHASIS_RE pass would) and every backtick."""
    # With pairs of one kind only, str.replace removes the same leftmost non-overlapping pairs as the regex; with
    # two kinds, removing one first can join runs of the other ("_**_" is "__" after one pass), so use the regex.
    if "**" in text:
        if "__" in text or "~~" in text:
            return _EMPHASIS_RE.sub("", text)
        text = text.replace("**", "")
    elif "__" in text:
        if "~~" in text:
            return _EMPHASIS_RE.sub("", text)
        text = text.replace("__", "")
    elif "~~" in text:
        text = text.replace("~~", "")
    return text.replace("`", "") if "`" in text else text  # backticks are never part of a pair


_SAMPLE_PREFIX = 8000
_PLAIN_START = 1000  # characters of a note's start that usually show enough letters (see _plain_start_suffices)


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


def _plain_start_suffices(content: str, min_chars: int) -> bool:
    """Whether the first lines alone show min_chars letters, when they hold no markup that could reach past them.

    Without "<" or "[" in them, every pass of visible_text that touches them stays within a line, so each letter
    they show is shown in the whole content too: the answer is the one the whole content would give.
    """
    cut = content.rfind("\n", 0, _PLAIN_START)
    if len(content) <= _PLAIN_START or cut <= 0:
        return False
    start = content[:cut]
    return "<" not in start and "[" not in start and _letters(visible_text(start), min_chars) >= min_chars


def unusable_reason(content: str, *, min_chars: int = 80) -> str | None:
    """Say why article content is unusable ('binary', 'html-without-text', 'too-short')."""
    if looks_binary(content):
        return "binary"
    if _plain_start_suffices(content, min_chars):
        return None
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
