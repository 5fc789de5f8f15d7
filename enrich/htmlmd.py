"""HTML to clean, safe Markdown on the stdlib html.parser (no scripts, no raw HTML, no unsafe URLs)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html import unescape
from html.parser import HTMLParser
from urllib.parse import urljoin

__all__ = ["html_to_markdown", "html_to_text", "safe_url", "text_to_markdown"]

_DROP = frozenset("script style iframe frame frameset object embed applet form noscript template svg math canvas head "
                  "title button select textarea input video audio source track param dialog portal".split())  # with content
_VOID = frozenset("area base br col embed hr img input keygen link meta param source track wbr".split())
_BLOCK = frozenset(
    "p div section article header footer main aside nav figure figcaption address details summary "
    "dl dt dd center hgroup fieldset legend caption body html".split()
)
_EMPHASIS = {"strong": "**", "b": "**", "em": "*", "i": "*", "del": "~~", "s": "~~", "strike": "~~"}
_SAFE_SCHEMES = ("http", "https", "mailto")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_URL_JUNK = re.compile(r"[\x00-\x1f\x7f]")
_WS = re.compile(r"[ \t\n\r\f\v\u00a0]+")
_TAG_START = re.compile(r"<(?=[A-Za-z!/?])")
_ENTITY_LIKE = re.compile(r"&(?=#?[A-Za-z0-9]+;)")
# Line starts that would change the note's structure: ATX headings, fences, thematic breaks, setext underlines.
_RISKY_LINE = re.compile(r"^(#{1,6}(?=[ \t]|$)|`{3,}|~{3,}|(?:[-*_][ \t]*){3,}$|=+[ \t]*$|-+[ \t]*$)")
_LIST_FENCE = re.compile(r"^((?:[-*+]|\d{1,9}[.)])[ \t]+)(?=`{3,}|~{3,})")  # a fence opening a list item
_NEEDS_ESCAPE = re.compile(r"[&<\[\]]")
_BRACKET = re.compile(r"(\\*)([\[\]])")
_CLOSING_HASHES = re.compile(r"([ \t])(#+)$")
_DROPPED_BLOCK = re.compile(r"<(script|style|template|noscript)\b.*?(?:</\1\s*>|$)", re.IGNORECASE | re.DOTALL)
_ANY_TAG = re.compile(r"<[A-Za-z/!?][^>]*>?")
_BR = "\x00"  # marks a hard line break inside inline text until the block is flushed


def safe_url(url: str | None, base: str | None = None) -> str | None:
    """Return an absolute http(s)/mailto URL (resolved against base) or None when unsafe."""
    clean = _URL_JUNK.sub("", url or "").strip(" ")
    if not clean:
        return None
    m = _SCHEME.match(clean)
    if m is None and base:
        clean = urljoin(base, clean)
        m = _SCHEME.match(clean)
    if m is None or m.group(1).lower() not in _SAFE_SCHEMES:
        return None  # unsafe scheme, or relative with nothing to resolve it against
    for ch, code in (" ", "%20"), ("(", "%28"), (")", "%29"), ("<", "%3C"), (">", "%3E"), ('"', "%22"):
        clean = clean.replace(ch, code)
    return clean


def _escape_text(text: str) -> str:
    """Neutralise raw HTML, entities, links and wikilinks written as text."""
    if not _NEEDS_ESCAPE.search(text):
        return text
    text = _ENTITY_LIKE.sub("&amp;", text)
    text = _TAG_START.sub("&lt;", text)
    return _BRACKET.sub(lambda m: m.group(1) * 2 + "\\" + m.group(2), text)


def _escape_line(line: str) -> str:
    """Backslash-escape a (stripped) text line that Markdown would read as a heading, fence or break."""
    return "\\" + line if _RISKY_LINE.match(line) else _LIST_FENCE.sub(r"\1\\", line, count=1)


@dataclass
class _Container:
    """A list item or blockquote: the prefix of its first line and of the following ones."""
    first: str
    rest: str
    item_depth: int = 0  # list nesting level for list items, 0 for blockquotes
    used: bool = False  # the first line (with the list marker) was written


@dataclass
class _Table:
    """Rows of cells collected until </table>."""
    rows: list[list[str]] = field(default_factory=list)
    row: list[str] | None = None
    cell_start: int | None = None


class _Converter(HTMLParser):
    """Stream HTML events into Markdown blocks."""

    def __init__(self, base: str | None) -> None:
        super().__init__(convert_charrefs=True)
        self.base = base
        self.blocks: list[str] = []
        self.inline: list[str] = []
        self.drop: list[str] = []
        self.containers: list[_Container] = []
        self.lists: list[int] = []  # per open list: the last ordered item number, or -1 for <ul>
        self.marks: list[tuple[str, int, str]] = []  # (tag, inline index, href or marker)
        self.heading: int | None = None
        self.pre: list[str] | None = None
        self.pre_lang = ""
        self.code_start: int | None = None
        self.table: _Table | None = None
        self.last_in_list = False
        self.last_boxes: list[_Container] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Open an element."""
        if self.drop or tag in _DROP:
            if tag in _DROP and tag not in _VOID:
                self.drop.append(tag)
            return
        a = {k.lower(): v or "" for k, v in attrs}
        if self.pre is not None:
            if tag == "br":
                self.pre.append("\n")
            elif tag == "code" and not self.pre_lang:
                self.pre_lang = _code_lang(a.get("class", ""))
            return
        self._start(tag, a)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """A self-closing tag: open it, and close it unless it is void."""
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        """Close an element (unmatched end tags are ignored)."""
        if self.drop:
            if tag in self.drop:
                while self.drop.pop() != tag:
                    pass
            return
        if self.pre is not None:
            if tag == "pre":
                self._end_pre()
            return
        self._end(tag)

    def handle_data(self, data: str) -> None:
        """Add text (raw inside <pre>, escaped elsewhere)."""
        if self.drop:
            return
        if self.pre is not None:
            self.pre.append(data)
        else:  # code spans are literal: no escaping inside them
            self.inline.append(data if self.code_start is not None else _escape_text(data))

    def _start(self, tag: str, a: dict[str, str]) -> None:
        """Open a non-dropped element outside <pre>."""
        if self.code_start is not None and tag in ("a", "img", "code", *_EMPHASIS):
            return  # nothing nests inside a code span
        if tag in _BLOCK or tag == "p":
            self._block_break()
        elif tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self._flush()
            self.heading = min(6, int(tag[1]) + 3)
        elif tag == "br":
            self.inline.append(" " if self.table and self.table.cell_start is not None else _BR)
        elif tag == "hr":
            self._flush()
            self._emit(["* * *"])
        elif tag in ("ul", "ol"):
            self._flush()
            if not self.lists:
                self.last_in_list = False  # a new top-level list is never glued to the previous one
            start = a.get("start", "1").strip()
            self.lists.append(-1 if tag == "ul" else int(start) - 1 if start.isdigit() and len(start) < 9 else 0)
        elif tag == "li":
            self._start_item()
        elif tag == "blockquote":
            self._flush()
            self.containers.append(_Container("> ", "> "))
        elif tag == "pre":
            self._flush()
            self.pre, self.pre_lang = [], ""
        elif tag == "code":
            self.code_start = len(self.inline)
        elif tag in _EMPHASIS:
            self.marks.append((tag, len(self.inline), _EMPHASIS[tag]))
        elif tag == "a":
            self.marks.append(("a", len(self.inline), safe_url(a.get("href"), self.base) or ""))
        elif tag == "img":
            self._image(a)
        elif tag in ("table", "tr", "td", "th"):
            self._table_start(tag)

    def _end(self, tag: str) -> None:
        """Close a non-dropped element outside <pre>."""
        if self.code_start is not None and tag in ("a", *_EMPHASIS):
            return
        if tag in _BLOCK or tag == "p":
            self._block_break()
        elif tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self._flush()
        elif tag in ("ul", "ol"):
            self._flush()
            if self.lists:
                self._close(len(self.lists))
                self.lists.pop()
        elif tag == "li":
            self._flush()
        elif tag == "blockquote":
            self._flush()
            self._close(0)
        elif tag == "code" and self.code_start is not None:
            self._close_code()
        elif tag in _EMPHASIS or tag == "a":
            self._close_mark(tag)
        elif tag in ("table", "tr", "td", "th"):
            self._table_end(tag)

    def _block_break(self) -> None:
        """End the current paragraph (inside a table cell: just a space)."""
        if self.table is not None and self.table.cell_start is not None:
            self.inline.append(" ")
        else:
            self._flush()

    def _start_item(self) -> None:
        """Start a list item: close the previous one at this level and push its marker."""
        self._flush()
        if not self.lists:
            self.lists.append(-1)
        self._close(len(self.lists))
        if self.lists[-1] >= 0:
            self.lists[-1] += 1
        marker = f"{self.lists[-1]}. " if self.lists[-1] >= 0 else "- "
        self.containers.append(_Container(marker, " " * len(marker), len(self.lists)))

    def _close(self, depth: int) -> None:
        """Drop the innermost item of the list at `depth` (0: blockquote) and all it holds open."""
        for i in range(len(self.containers) - 1, -1, -1):
            if self.containers[i].item_depth == depth:
                del self.containers[i:]
                return

    def _image(self, a: dict[str, str]) -> None:
        """Add an image as ![alt](src) when its source is safe."""
        src = safe_url(a.get("src"), self.base)
        if src is not None and not src.lower().startswith("mailto:"):
            alt = _escape_text(_WS.sub(" ", a.get("alt", "")).strip())
            self.inline.append(f"![{alt}]({src})")

    def _close_code(self) -> None:
        """Wrap inline code in enough backticks."""
        start = self.code_start or 0
        self.code_start = None
        raw = "".join(self.inline[start:]).replace(_BR, " ")
        body = _WS.sub(" ", raw)
        del self.inline[start:]
        if not body.strip():
            self.inline.append(body)
            return
        longest = max((len(r) for r in re.findall(r"`+", body)), default=0)
        tick = "`" * (longest + 1)
        pad = " " if body.startswith("`") or body.endswith("`") else ""
        self.inline.append(f"{tick}{pad}{body}{pad}{tick}")

    def _close_mark(self, tag: str) -> None:
        """Close emphasis or a link, moving outer whitespace outside the markers."""
        for i in range(len(self.marks) - 1, -1, -1):
            if self.marks[i][0] == tag:
                break
        else:
            return
        _, start, extra = self.marks.pop(i)
        del self.marks[i:]
        inner = "".join(self.inline[start:])
        del self.inline[start:]
        core = inner.strip(" \t\n\r" + _BR)
        lead = inner[: len(inner) - len(inner.lstrip(" \t\n\r" + _BR))]
        trail = inner[len(inner.rstrip(" \t\n\r" + _BR)) :]
        if not core:
            self.inline.append(inner)
        elif tag == "a":
            self.inline.append(f"{lead}[{core}]({extra}){trail}" if extra else inner)
        else:
            self.inline.append(f"{lead}{extra}{core}{extra}{trail}")

    def _end_pre(self) -> None:
        """Emit a fenced code block longer than any backtick run inside it."""
        body = "".join(self.pre or []).strip("\n")
        self.pre = None
        longest = max((len(r) for r in re.findall(r"`{3,}", body)), default=2)
        fence = "`" * (longest + 1)
        if body.strip():
            self._emit([fence + self.pre_lang, *body.splitlines(), fence])

    def _table_start(self, tag: str) -> None:
        """Open a table, row or cell."""
        if tag == "table":
            self._flush()
            self.table = _Table()
        elif self.table is None:
            return
        elif tag == "tr":
            self._table_end("tr")
            self.table.row = []
        else:
            self._table_end("td")
            if self.table.row is None:
                self.table.row = []
            self.table.cell_start = len(self.inline)

    def _table_end(self, tag: str) -> None:
        """Close a cell, a row or the table."""
        t = self.table
        if t is None:
            return
        if t.cell_start is not None and tag in ("td", "th", "tr", "table"):
            text = _WS.sub(" ", "".join(self.inline[t.cell_start :]).replace(_BR, " ")).strip()
            del self.inline[t.cell_start :]
            (t.row if t.row is not None else []).append(text.replace("|", "\\|"))
            t.cell_start = None
        if tag in ("tr", "table") and t.row is not None:
            if t.row:
                t.rows.append(t.row)
            t.row = None
        if tag == "table" and t.rows:  # written as a GFM table, the first row as its header
            self.table, width = None, max(len(r) for r in t.rows)
            lines = ["| " + " | ".join(r + [""] * (width - len(r))) + " |" for r in t.rows]
            self._emit(lines[:1] + ["|" + " --- |" * width] + lines[1:])
        elif tag == "table":
            self.table = None

    def _flush(self) -> None:
        """Turn the pending inline text into a paragraph or heading block."""
        if self.code_start is not None:
            self._close_code()
        while self.marks:
            self._close_mark(self.marks[-1][0])
        text = "".join(self.inline)
        self.inline = []
        level, self.heading = self.heading, None
        if level is not None:
            line = _WS.sub(" ", text.replace(_BR, " ")).strip()
            if line:
                self._emit(["#" * level + " " + _CLOSING_HASHES.sub(r"\1\\\2", line)])
            return
        body = "\n".join(_escape_line(_WS.sub(" ", part).strip()) for part in text.split(_BR)).strip("\n")
        if body:
            self._emit(body.split("\n"))

    def _emit(self, lines: list[str]) -> None:
        """Add a block with the container prefixes (list markers, quote marks)."""
        starts_item = any(c.item_depth and not c.used for c in self.containers)
        if self.blocks:  # the blank line between blocks keeps the quote marks both blocks share
            shared = next((i for i, (a, b) in enumerate(zip(self.containers, self.last_boxes)) if a is not b),
                          min(len(self.containers), len(self.last_boxes)))
            sep = "".join(c.rest for c in self.containers[:shared]).rstrip()
            self.blocks.append("\n" if starts_item and self.last_in_list else "\n" + sep + "\n")
        out: list[str] = []
        for line in lines:
            prefix = "".join(c.rest if c.used else c.first for c in self.containers)
            for c in self.containers:
                c.used = True
            out.append((prefix + line).rstrip())
        self.blocks.append("\n".join(out))
        self.last_in_list = any(c.item_depth for c in self.containers)
        self.last_boxes = list(self.containers)

    def result(self) -> str:
        """Finish and return the Markdown."""
        self.close()
        if self.pre is not None:
            self._end_pre()
        while self.table is not None:
            self._table_end("table")
        self._flush()
        text = "".join(self.blocks)
        return re.sub(r"\n{3,}", "\n\n", text).strip("\n")


def _code_lang(cls: str) -> str:
    """The language of a <code class="language-x"> (letters, digits, +, -, #), else ''."""
    m = re.search(r"(?:^|\s)(?:language|lang)-([A-Za-z0-9_+#.\-]+)", cls)
    return m.group(1) if m else ""


def html_to_markdown(html: str, base_url: str | None = None) -> str:
    """Convert an HTML fragment to safe Markdown; relative links resolve against base_url."""
    conv = _Converter(base_url)
    conv.feed(html)
    return conv.result()


def html_to_text(html: str) -> str:
    """Visible text of an HTML fragment on one line (for titles), entities decoded."""
    text = _DROPPED_BLOCK.sub(" ", html)
    return _WS.sub(" ", unescape(_ANY_TAG.sub(" ", text))).strip()


def text_to_markdown(text: str) -> str:
    """Plain text to Markdown: paragraphs kept, lines that would change the structure escaped."""
    out: list[str] = []
    for para in re.split(r"\n[ \t]*\n+", text.replace("\r\n", "\n").replace("\r", "\n")):
        lines = (_escape_line(_escape_text(_WS.sub(" ", ln).strip())) for ln in para.split("\n"))
        out.append("\n".join(ln for ln in lines if ln))
    return "\n\n".join(p for p in out if p)
