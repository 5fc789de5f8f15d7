"""Which notes need work, and why: placeholder, stale, protected, unusable, up to date."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from . import visible
from .roles import KEY_POINTS, MANAGED, RoleTable
from .vault import VaultNote

# statuses that lead to an LLM call (or a cached result)
WORK = ("placeholder", "stale", "forced", "mojibake")
SKIP = ("up-to-date", "protected", "unusable", "not-managed", "edited", "stale-skipped")


@dataclass(frozen=True)
class Decision:
    """What the planner decided for one note."""

    status: str
    reason: str

    @property
    def needs_call(self) -> bool:
        """True when the note will be (re-)enriched."""
        return self.status in WORK


def section_hash(text: str) -> str:
    """Short hash of a managed section's text, whitespace at the ends ignored."""
    return hashlib.sha256(text.strip().encode("utf-8")).hexdigest()[:16]


def provenance(vn: VaultNote) -> dict[str, Any] | None:
    """The `enriched:` record the tool wrote last time, if any."""
    value = vn.note.meta.get("enriched")
    return value if isinstance(value, dict) else None


def edited_sections(vn: VaultNote, prov: dict[str, Any]) -> list[str]:
    """Managed sections whose text differs from what the tool wrote last time."""
    edited: list[str] = []
    for role in MANAGED:
        sec = vn.note.section(role)
        recorded = prov.get(role)
        if sec is not None and recorded and section_hash(vn.note.body(sec)) != recorded:
            edited.append(sec.title)
    return edited


def decide(
    vn: VaultNote,
    roles: RoleTable,
    *,
    content_hash: str,
    model: str,
    prompt_version: str,
    stale: bool = False,
    force: bool = False,
    min_chars: int = 80,
) -> Decision:
    """Decide whether a note needs an enrichment call."""
    if vn.note.section(KEY_POINTS) is None:
        return Decision("not-managed", "no key-points section (关键观点 / Key points)")
    reason = visible.unusable_reason(vn.note.content_text(), min_chars=min_chars)
    if reason:
        return Decision("unusable", f"content is {reason}")
    if force:
        return Decision("forced", "--force")
    prov = provenance(vn)
    if prov is None:
        return _first_time(vn, roles)
    edited = edited_sections(vn, prov)
    if edited:
        return Decision("protected", f"edited by hand since enrichment: {', '.join(edited)} (use --force)")
    changed = _what_changed(prov, content_hash, model, prompt_version)
    if changed:
        return Decision("stale", f"{changed} changed") if stale else Decision("stale-skipped", f"{changed} changed (use --stale)")
    return Decision("up-to-date", "enriched and unchanged")


def _first_time(vn: VaultNote, roles: RoleTable) -> Decision:
    """A note never enriched: work when a managed section is a placeholder."""
    holders = [
        s.title for s in vn.note.sections if s.role in MANAGED and roles.is_placeholder(vn.note.body(s))
    ]
    if holders:
        return Decision("placeholder", f"placeholder: {', '.join(holders)}")
    return Decision("edited", "managed sections already written by hand (use --force)")


def _what_changed(prov: dict[str, Any], content_hash: str, model: str, prompt_version: str) -> str:
    """Name what differs from the recorded provenance ('' when nothing)."""
    parts = []
    if prov.get("content") != content_hash:
        parts.append("content")
    if prov.get("prompt") != prompt_version:
        parts.append("prompt")
    if prov.get("model") != model:
        parts.append("model")
    return ", ".join(parts)
