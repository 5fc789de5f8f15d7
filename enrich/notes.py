"""The note model: bytes in, spans out; rendering an untouched note gives back the same bytes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator, NamedTuple

from . import frontmatter as fmod
from .errors import BadFrontmatterError, NotUtf8Error
from .frontmatter import Frontmatter
from .roles import CONTENT, KEY_POINTS, RELATED, SOURCE, THOUGHTS, RoleTable, default_roles

BOM = "\ufeff"
_HEADING = re.compile(r"(#{1,6})(?:[ \t]+(.*?))?[ \t]*(?:[ \t]#+[ \t]*)?$")
_FENCE_START = r"[ ]{0,3}(?:(?:[-*+]|\d{1,9}[.)])[ \t]+)?"  # indent, and a list marker (a fence may open a list item)
_FENCE = re.compile("^" + _FENCE_START + r"(`{3,}|~{3,})")
_BREAK = re.compile(r"^[ ]{0,3}(?:-[ \t]*){3,}$|^[ ]{0,3}(?:\*[ \t]*){3,}$|^[ ]{0,3}(?:_[ \t]*){3,}$")
# Lines that may be headings, fences or thematic breaks (list items are skipped fast).
_FENCE_LINE = _FENCE_START + r"(?:`{3,}|~{3,})[^\r\n]*"
_MARK_LINE = r"[ ]{0,3}(?:#{1,6}(?:[ \t][^\r\n]*)?|(?:-[ \t]*){3,}|(?:\*[ \t]*){3,}|(?:_[ \t]*){3,})(?=\r\n|\n|\r|\Z)"
_CANDIDATE = re.compile(f"^{_FENCE_LINE}|^{_MARK_LINE}", re.MULTILINE)
# The same after a newline: sre then jumps from newline to newline instead of trying "^" at every offset (2x faster).
_NEXT_CANDIDATE = re.compile(f"\n({_FENCE_LINE}|{_MARK_LINE})")


class Section(NamedTuple):
    """One heading and its body, as offsets into the note's text (a named tuple: built ~3x faster than a dataclass)."""

    level: int
    title: str
    role: str | None
    start: int  # start of the heading line
    body_start: int  # just after the heading line
    end: int  # start of the next heading of the same or a higher level (or the trailer)


@dataclass(frozen=True)
class Note:
    """A parsed note: decoded text plus the facts needed to write it back byte for byte."""

    path: Path
    text: str  # decoded text without the BOM
    bom: bool
    newline: str
    frontmatter: Frontmatter | None
    title: str | None
    sections: tuple[Section, ...]
    body_start: int  # first offset after the frontmatter
    trailer_start: int  # a closing `---` footer after the last section, else len(text)

    @property
    def id(self) -> str:
        """The note's id: its file stem (how Obsidian links resolve)."""
        return self.path.stem

    @property
    def meta(self) -> dict[str, Any]:
        """The parsed frontmatter mapping (empty when none); BadFrontmatterError when unreadable."""
        if self.frontmatter is None:
            return {}
        try:
            return self.frontmatter.data
        except fmod.FrontmatterError as exc:
            raise BadFrontmatterError(self.path, str(exc)) from exc

    @cached_property
    def display_title(self) -> str:
        """Frontmatter title, else the H1, else the file stem."""
        t = self.meta.get("title")
        return str(t) if t else (self.title or self.id)

    def render(self) -> bytes:
        """Return the note as bytes, exactly as it would be written."""
        return ((BOM if self.bom else "") + self.text).encode("utf-8")

    def section(self, role: str) -> Section | None:
        """Return the first section with a role, or None."""
        return self._first_of_role.get(role)

    @cached_property
    def _first_of_role(self) -> dict[str | None, Section]:
        """The first section of each role (looked up a dozen times per note)."""
        out: dict[str | None, Section] = {}
        for s in self.sections:
            out.setdefault(s.role, s)
        return out

    def body(self, section: Section) -> str:
        """Return the text of a section's body."""
        return self.text[section.body_start : section.end]

    def content_text(self) -> str:
        """The article text: the content section, else everything the user did not mark."""
        sec = self.section(CONTENT)
        if sec is not None:
            return self.body(sec).strip()
        skip = {KEY_POINTS, RELATED, THOUGHTS, SOURCE}
        first = self.sections[0].start if self.sections else self.trailer_start
        parts = [_strip_title(self.text[self.body_start : first])]
        parts += [self.body(s) for s in self.sections if s.role not in skip and s.level <= 2]
        return "\n".join(p.strip() for p in parts if p.strip())


def _strip_title(preamble: str) -> str:
    """Drop the H1 line from the text before the first section."""
    return re.sub(r"^\s*#[ \t]+[^\n]*\n?", "", preamble, count=1)


def decode(raw: bytes, path: Path | str) -> tuple[str, bool]:
    """Decode UTF-8 (with or without BOM); raise NotUtf8Error otherwise."""
    bom = raw.startswith(b"\xef\xbb\xbf")
    try:
        text = raw[3 if bom else 0 :].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NotUtf8Error(path, f"not UTF-8 (byte {exc.start}: {raw[exc.start:exc.start+1]!r})") from exc
    return text, bom


def detect_newline(text: str) -> str:
    """Return the note's dominant newline style."""
    crlf = text.count("\r\n")
    lf = text.count("\n") - crlf
    cr = text.count("\r") - crlf
    if crlf >= lf and crlf >= cr and crlf:
        return "\r\n"
    return "\r" if cr > lf else "\n"


def parse_note(raw: bytes, path: Path | str = "note.md", roles: RoleTable | None = None) -> Note:
    """Parse note bytes; raise NotUtf8Error or BadFrontmatterError on bad input."""
    text, bom = decode(raw, path)
    return parse_text(text, path, bom=bom, roles=roles)


def parse_text(text: str, path: Path | str = "note.md", *, bom: bool = False, roles: RoleTable | None = None) -> Note:
    """Parse decoded note text into frontmatter, title, sections and trailer."""
    roles = roles or default_roles()
    fm = fmod.parse(text)
    start = fm.end if fm else 0
    headings, breaks = _scan(text, start)
    title = None
    if headings and headings[0][0] == 1:
        title = headings.pop(0)[1]
    trailer = _trailer_start(text, headings, breaks)
    sections = _sections(headings, trailer, roles)
    path = path if isinstance(path, Path) else Path(path)
    return Note(path, text, bom, detect_newline(text), fm, title, sections, start, trailer)


def _scan(text: str, start: int) -> tuple[list[tuple[int, str, int, int]], list[int]]:
    """Find ATX headings (level, title, line start, line end) and thematic breaks outside code."""
    headings: list[tuple[int, str, int, int]] = []
    breaks: list[int] = []
    fence: str | None = None
    view = text.replace("\r", "\n") if "\r" in text and "\n" not in text else text  # CR-only files
    for line_start, line_end, bare in _candidate_lines(view, start):
        f = _FENCE.match(bare)
        if fence is not None:
            if f and f.group(1)[0] == fence[0] and len(f.group(1)) >= len(fence) and not bare.strip()[len(f.group(1)):].strip():
                fence = None
            continue
        if f:
            fence = f.group(1)
        elif bare.startswith("#"):
            h = _HEADING.match(bare)
            if h:
                headings.append((len(h.group(1)), (h.group(2) or "").strip(), line_start, _line_end(view, line_end)))
        elif _BREAK.match(bare):
            breaks.append(line_start)
    return headings, breaks


def _candidate_lines(view: str, start: int) -> Iterator[tuple[int, int, str]]:
    """(start, end, text) of each line from `start` on that _CANDIDATE matches, as _CANDIDATE.finditer finds them."""
    first = _CANDIDATE.match(view, start)
    if first:
        yield first.start(), first.end(), first.group()
    for m in _NEXT_CANDIDATE.finditer(view, start):
        yield m.start(1), m.end(1), m.group(1)


def _line_end(text: str, end: int) -> int:
    """Offset just after the newline that ends a line at `end`."""
    if text.startswith("\r\n", end):
        return end + 2
    return end + 1 if end < len(text) else end


def _trailer_start(text: str, headings: list[tuple[int, str, int, int]], breaks: list[int]) -> int:
    """Return the offset of a closing `---` footer after the last heading, else len(text)."""
    last_heading = headings[-1][2] if headings else -1
    after = [b for b in breaks if b > last_heading]
    if not headings or not after:
        return len(text)
    return after[0]


def _sections(headings: list[tuple[int, str, int, int]], limit: int, roles: RoleTable) -> tuple[Section, ...]:
    """Build sections: each runs to the next heading of the same or a higher level."""
    out: list[Section] = []
    for i, (level, title, start, body_start) in enumerate(headings):
        end = limit
        for nlevel, _, nstart, _ in headings[i + 1 :]:
            if nlevel <= level:
                end = nstart
                break
        role = roles.role_of(title) if level <= 3 else None
        out.append(Section(level, title, role, start, body_start, min(end, limit)))
    return tuple(out)


# ---------------------------------------------------------------- edits


def replace_body(note: Note, section: Section, lines: list[str], roles: RoleTable | None = None) -> Note:
    """Return a note whose section body holds `lines`, keeping its surrounding blank lines."""
    old = note.body(section)
    lead = old[: len(old) - len(old.lstrip("\r\n"))] or note.newline
    tail = old[len(old.rstrip()) :]
    if not tail.strip("\r\n \t") and tail.count("\n") + tail.count("\r") - tail.count("\r\n") < 2:
        at_end = section.end >= len(note.text)
        tail = note.newline if at_end else note.newline * 2
    new_body = lead + note.newline.join(lines) + tail
    return _splice(note, section.body_start, section.end, new_body, roles)


def append_section(note: Note, heading: str, lines: list[str], roles: RoleTable | None = None) -> Note:
    """Return a note with a new `## heading` section added before the trailer."""
    nl = note.newline
    at = note.trailer_start
    before = note.text[:at]
    sep = "" if before.endswith(nl * 2) else (nl if before.endswith(nl) else nl * 2)
    block = f"{sep}## {heading}{nl}{nl}" + nl.join(lines) + nl
    if at < len(note.text):
        block += nl
    return _reparse(note, before + block + note.text[at:], roles)


def set_meta(note: Note, key: str, value: Any, roles: RoleTable | None = None) -> Note:
    """Return a note with one frontmatter key set in the file's own style."""
    text = fmod.set_key(note.text, note.frontmatter, key, value, note.newline)
    old_end = note.frontmatter.end if note.frontmatter else 0
    fm = fmod.parse(text)
    if fm is None or not text.endswith(note.text[old_end:]) or len(text) - fm.end != len(note.text) - old_end:
        return _reparse(note, text, roles)  # the edit reached past the frontmatter: not expected, but be exact
    return _shifted(note, text, 0, old_end, fm.end - old_end, fm)


def _splice(note: Note, a: int, b: int, new: str, roles: RoleTable | None) -> Note:
    """The note with text[a:b] replaced by new: offsets shifted when the edit cannot change the structure."""
    text = note.text[:a] + new + note.text[b:]
    inside = any(a < x < b for sec in note.sections for x in (sec.start, sec.body_start, sec.end))
    inside = inside or a < note.trailer_start < b
    lines_kept = (a == 0 or note.text[a - 1] in "\r\n") and (
        b == len(note.text) or (note.text[b - 1] in "\r\n" and new.endswith(("\n", "\r")) if b else not new)
    )
    structural = _CANDIDATE.search(new) or _CANDIDATE.search(note.text[a:b])  # a heading, fence or break
    cr_only = "\r" in text and "\n" not in text
    if inside or not lines_kept or structural or cr_only:
        return _reparse(note, text, roles)  # the edit may change the note's structure: parse again
    return _shifted(note, text, a, b, len(new) - (b - a), note.frontmatter)


def _shifted(note: Note, text: str, a: int, b: int, delta: int, fm: Frontmatter | None) -> Note:
    """The note over new text where text[a:b] changed length by delta (no heading, fence or break touched)."""

    def move(x: int) -> int:
        return x + delta if x >= b else x

    def move_body(x: int) -> int:  # a body that starts where text is inserted keeps its start
        return x + delta if x >= b and x > a else x

    sections = tuple(  # a section ending before the edit keeps its offsets (and its object)
        s if s.end < b else Section(s.level, s.title, s.role, move(s.start), move_body(s.body_start), move(s.end))
        for s in note.sections
    )
    return Note(note.path, text, note.bom, note.newline, fm, note.title, sections,
                fm.end if fm else 0, move(note.trailer_start))


def _reparse(note: Note, text: str, roles: RoleTable | None) -> Note:
    """Re-parse edited text, keeping the note's path and BOM."""
    return parse_text(text, note.path, bom=note.bom, roles=roles)


def reparsed(note: Note, roles: RoleTable | None = None) -> Note:
    """The note parsed afresh from its text (to check a chain of edits)."""
    return _reparse(note, note.text, roles)
