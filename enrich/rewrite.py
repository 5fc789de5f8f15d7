"""Apply a validated enrichment to a note, changing only the parts the tool owns."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from .links import find_links
from .notes import Note, Section, append_section, replace_body, reparsed, set_meta
from .plan import section_hash
from .roles import KEY_POINTS, MANAGED, RELATED, RoleTable
from .schema import Enrichment

_ONLY_LINK = re.compile(r"^\s*(?:[-*+]\s+)?!?\[\[[^\]]+\]\]\s*$")
EMPTY_RELATED = {"zh": "- (暂无关联卡片)", "en": "- (none yet)"}


class RewriteError(ValueError):
    """The rewrite would touch bytes the tool does not own (a bug guard)."""


@dataclass
class Rewrite:
    """The new note and what changed."""

    note: Note
    new_tags: list[str] = field(default_factory=list)
    dropped_links: list[str] = field(default_factory=list)
    added_links: list[str] = field(default_factory=list)


def related_lines(
    note: Note, section: Section | None, ids: list[str], resolves: Callable[[str], bool], roles: RoleTable
) -> tuple[list[str], list[str], list[str]]:
    """Lines for the related section: kept user lines + new links; also (added, dropped)."""
    kept: list[str] = []
    dropped: list[str] = []
    present: set[str] = set()
    body = note.body(section) if section is not None else ""
    for line in body.strip("\r\n").splitlines():
        if roles.is_placeholder_line(line) or not line.strip():
            continue
        links = [ln for ln in find_links(line) if ln.target]
        if _ONLY_LINK.match(line) and links and not all(resolves(ln.target) for ln in links):
            dropped += [ln.target for ln in links]
            continue
        kept.append(line.rstrip())
        present.update(ln.target.casefold() for ln in links)
    added = [i for i in ids if i.casefold() not in present]
    return kept + [f"- [[{i}]]" for i in added], added, dropped


def apply(
    note: Note,
    result: Enrichment,
    *,
    lang: str,
    roles: RoleTable,
    tags: tuple[list[str], list[str]],
    resolves: Callable[[str], bool],
    record: dict[str, Any],
) -> Rewrite:
    """Return the rewritten note: key points, related links, tags and provenance."""
    before = note
    kp = note.section(KEY_POINTS)
    assert kp is not None
    note = replace_body(note, kp, [f"- {p}" for p in result.key_points], roles)
    rel = note.section(RELATED)
    lines, added, dropped = related_lines(note, rel, list(result.related), resolves, roles)
    lines = lines or [EMPTY_RELATED.get(lang, EMPTY_RELATED["en"])]
    if rel is not None:
        note = replace_body(note, rel, lines, roles)
    elif added:
        note = append_section(note, roles.heading_for(RELATED, lang), lines, roles)
    final_tags, new_tags = tags
    if final_tags != _existing_tags(note):
        note = set_meta(note, "tags", final_tags, roles)
    record = dict(record)
    for role in MANAGED:
        sec = note.section(role)
        if sec is not None:
            record[role] = section_hash(note.body(sec))
    note = set_meta(note, "enriched", record, roles)
    final = reparsed(note, roles)  # the edits shifted offsets; the written note is the one parsed afresh
    if (final.sections, final.body_start, final.trailer_start) != (note.sections, note.body_start, note.trailer_start):
        raise RewriteError("internal check failed: the rewrite would change the note's structure")
    guard_untouched(before, final)
    return Rewrite(final, new_tags, dropped, added)


def _existing_tags(note: Note) -> list[str]:
    """The note's current tags as a list of strings."""
    value = note.meta.get("tags")
    if isinstance(value, list):
        return [str(v) for v in value]
    return [] if value is None else [str(value)]


def _unowned(note: Note) -> list[str]:
    """Texts of everything the tool does not own: preamble, other sections, trailer."""
    first = note.sections[0].start if note.sections else note.trailer_start
    parts = [note.text[note.body_start : first], note.text[note.trailer_start :]]
    for sec in note.sections:
        if sec.role not in MANAGED and not _inside_managed(note, sec):
            parts.append(note.text[sec.start : sec.end].rstrip())
    return parts


def _inside_managed(note: Note, sec: Section) -> bool:
    """True for a sub-heading inside a managed section."""
    return any(m.role in MANAGED and m.start < sec.start < m.end for m in note.sections)


def guard_untouched(before: Note, after: Note) -> None:
    """Raise RewriteError when any section the tool does not own changed."""
    if _unowned(before) != _unowned(after):
        raise RewriteError("internal check failed: a section the tool does not own would change")
