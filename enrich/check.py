"""`enrich check`: find what is wrong in a vault, without writing anything."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from . import visible
from .errors import BadFrontmatterError, NoteError, NotUtf8Error
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
    return visible.unusable_reason(vn.note.content_text(), min_chars=min_chars)


def local_problems(vn: VaultNote, roles: RoleTable, min_chars: int) -> list[Problem]:
    """Problems one parsed note has on its own (everything but links and ids)."""
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
    return out


def error_problem(err: NoteError, root: Path) -> Problem:
    """The problem for a file that could not be loaded."""
    kind = "not-utf8" if isinstance(err, NotUtf8Error) else (
        "bad-frontmatter" if isinstance(err, BadFrontmatterError) else "unreadable")
    return Problem(relative_path(err.path, root), kind, err.reason)


def duplicate_ids(rows: Iterable[tuple[str, str, str | None]]) -> list[Problem]:
    """Notes (rel, file stem, frontmatter id) sharing a frontmatter id or a file name (ambiguous links)."""
    by_id: dict[str, list[tuple[str, str]]] = {}
    by_stem: dict[str, list[tuple[str, str]]] = {}
    for rel, stem, fid in rows:
        if fid:
            by_id.setdefault(fid, []).append((rel, stem))
        by_stem.setdefault(stem.casefold(), []).append((rel, stem))
    out: list[Problem] = []
    for fid, group in by_id.items():
        if len(group) > 1:
            out += [Problem(rel, "duplicate-id", _shared_id(fid, rel, group)) for rel, _ in group]
    for group in by_stem.values():
        if len(group) > 1:
            out += [Problem(rel, "duplicate-id", f"file name '{stem}' is not unique in the vault") for rel, stem in group]
    return out


def _shared_id(fid: str, rel: str, group: list[tuple[str, str]], shown: int = 5) -> str:
    """Detail for a shared id: the other notes using it (the first few, then how many more)."""
    others = [r for r, _ in group if r != rel]
    more = f" and {len(others) - shown} more" if len(others) > shown else ""
    return f"id '{fid}' is also used by: {', '.join(others[:shown])}{more}"


def frontmatter_id(vn: VaultNote) -> str | None:
    """The note's frontmatter id as text, or None when absent or blank."""
    fid = vn.note.meta.get("id")
    return str(fid).strip() if fid is not None and str(fid).strip() else None


def sort_problems(problems: list[Problem]) -> None:
    """Order problems by note, then kind (stable)."""
    problems.sort(key=lambda p: (p.path, KINDS.index(p.kind)))


def check_vault(
    vault: Vault, roles: RoleTable, *, min_chars: int = 80, progress: Callable[[int, int], None] | None = None
) -> CheckReport:
    """Collect every problem in the vault; never writes."""
    with no_gc_pauses():
        return _check(vault, roles, min_chars, progress)


def _check(vault: Vault, roles: RoleTable, min_chars: int, progress: Callable[[int, int], None] | None) -> CheckReport:
    """check_vault's body."""
    report = CheckReport(notes=len(vault.notes) + len(vault.errors))
    report.problems = [error_problem(err, vault.root) for err in vault.errors]
    for i, vn in enumerate(vault.notes, 1):
        report.problems += local_problems(vn, roles, min_chars)
        report.problems += [
            Problem(vn.rel, "dangling-link", f"[[{link.target}]] matches no note") for link in vault.dangling(vn)
        ]
        if progress:
            progress(i, len(vault.notes))
    report.problems += duplicate_ids((vn.rel, vn.id, frontmatter_id(vn)) for vn in vault.notes)
    sort_problems(report.problems)
    return report
