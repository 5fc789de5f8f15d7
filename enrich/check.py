"""`enrich check`: find what is wrong in a vault, without writing anything."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from . import repair
from .errors import BadFrontmatterError, NotUtf8Error
from .roles import CONTENT, KEY_POINTS, MANAGED, RoleTable
from .vault import Vault, VaultNote, no_gc_pauses, relative_path

KINDS = (
    "placeholder",
    "mojibake",
    "unusable-content",
    "dangling-link",
    "duplicate-id",
    "bad-frontmatter",
    "not-utf8",
    "unreadable",
)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one note."""

    path: str
    kind: str
    detail: str


@dataclass
class CheckReport:
    """All problems found, plus counts."""

    notes: int
    problems: list[Problem] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Counts per kind and the number of notes checked."""
        counts = Counter(p.kind for p in self.problems)
        return {"notes": self.notes, "problems": len(self.problems), "by_kind": {k: counts.get(k, 0) for k in KINDS}}

    def to_json(self) -> dict[str, Any]:
        """The --json shape: problems and summary."""
        problems = [{"path": p.path, "kind": p.kind, "detail": p.detail} for p in self.problems]
        return {"problems": problems, "summary": self.summary()}


def unusable(vn: VaultNote, min_chars: int) -> str | None:
    """Why a note's content cannot be enriched, or None when it can."""
    return repair.unusable_reason(vn.note.content_text(), min_chars=min_chars)


def _note_problems(vn: VaultNote, vault: Vault, roles: RoleTable, min_chars: int) -> list[Problem]:
    """Problems of one parsed note."""
    out: list[Problem] = []
    fm = vn.note.frontmatter
    if fm is not None and fm.error:
        out.append(Problem(vn.rel, "bad-frontmatter", fm.error))
    if vn.repaired:
        out.append(Problem(vn.rel, "mojibake", "UTF-8 text read as cp1252; `enrich run` writes it back repaired"))
    for sec in vn.note.sections:
        if sec.role in MANAGED and roles.is_placeholder(vn.note.body(sec)):
            out.append(Problem(vn.rel, "placeholder", f"section '{sec.title}' holds only template text"))
    if vn.note.section(KEY_POINTS) is not None or vn.note.section(CONTENT) is not None:
        reason = unusable(vn, min_chars)
        if reason and (reason == "binary" or vn.note.section(KEY_POINTS) is not None):
            out.append(Problem(vn.rel, "unusable-content", reason))
    for link in vault.dangling(vn):
        out.append(Problem(vn.rel, "dangling-link", f"[[{link.target}]] matches no note"))
    return out


def _duplicate_ids(vault: Vault) -> list[Problem]:
    """Notes sharing a frontmatter id, or a file name (ambiguous links)."""
    by_id: dict[str, list[VaultNote]] = {}
    by_stem: dict[str, list[VaultNote]] = {}
    for vn in vault.notes:
        fid = vn.note.meta.get("id")
        if fid is not None and str(fid).strip():
            by_id.setdefault(str(fid).strip(), []).append(vn)
        by_stem.setdefault(vn.id.casefold(), []).append(vn)
    out: list[Problem] = []
    for fid, group in by_id.items():
        if len(group) > 1:
            others = ", ".join(v.rel for v in group)
            out += [Problem(v.rel, "duplicate-id", f"id '{fid}' is also used by: {others}") for v in group]
    for stem, group in by_stem.items():
        if len(group) > 1:
            out += [Problem(v.rel, "duplicate-id", f"file name '{v.id}' is not unique in the vault") for v in group]
    return out


def check_vault(
    vault: Vault, roles: RoleTable, *, min_chars: int = 80, progress: Callable[[int, int], None] | None = None
) -> CheckReport:
    """Collect every problem in the vault; never writes."""
    with no_gc_pauses():
        return _check(vault, roles, min_chars, progress)


def _check(vault: Vault, roles: RoleTable, min_chars: int, progress: Callable[[int, int], None] | None) -> CheckReport:
    """check_vault's body."""
    report = CheckReport(notes=len(vault.notes) + len(vault.errors))
    for err in vault.errors:
        kind = "not-utf8" if isinstance(err, NotUtf8Error) else (
            "bad-frontmatter" if isinstance(err, BadFrontmatterError) else "unreadable")
        report.problems.append(Problem(relative_path(err.path, vault.root), kind, err.reason))
    for i, vn in enumerate(vault.notes, 1):
        report.problems += _note_problems(vn, vault, roles, min_chars)
        if progress:
            progress(i, len(vault.notes))
    report.problems += _duplicate_ids(vault)
    report.problems.sort(key=lambda p: (p.path, KINDS.index(p.kind)))
    return report
