"""The scan behind `enrich check`: notes parsed in parallel processes, only small facts sent back.

A check needs every note parsed, but after that only a few facts per note (its problems, id, aliases,
link targets). Forked workers parse their share of the files and return those facts, so the cost of
sending whole parsed notes between processes is never paid. Small vaults, one core, or platforms
without `fork` use the plain serial scan (`check.check_vault`), which gives the same report.
"""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import charfreq, mojibake
from .check import CheckReport, Problem, duplicate_ids, error_problem, frontmatter_id, local_problems, sort_problems
from .errors import NoteError
from .links import is_attachment
from .roles import RoleTable
from .vault import LinkIndex, VaultNote, _build, no_gc_pauses, read_note_text, with_default_frequencies

PARALLEL_MIN_NOTES = 400  # below this, forking costs more than it saves
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class NoteFacts:
    """What the cross-note checks need from one note."""

    rel: str
    id: str
    suffix: str
    aliases: list[str]
    fid: str | None  # the frontmatter id
    targets: list[str]  # link targets, attachments excluded
    problems: list[Problem]


@dataclass
class Chunk:
    """A worker's answer for its share of the files."""

    facts: list[NoteFacts] = field(default_factory=list)
    errors: list[Problem] = field(default_factory=list)
    sampled: list[tuple[int, int]] = field(default_factory=list)  # (file index, text length) of each note in facts
    deferred: list[int] = field(default_factory=list)  # file indexes that look like mojibake


@dataclass(frozen=True)
class _Job:
    """What every worker needs; set before forking so nothing is pickled."""

    root: Path
    roles: RoleTable
    min_chars: int
    files: list[Path]


_JOB: _Job | None = None


def facts_of(vn: VaultNote, roles: RoleTable, min_chars: int) -> NoteFacts:
    """The facts of one parsed note."""
    targets = [ln.target for ln in vn.links if ln.target and not is_attachment(ln.target)]
    problems = local_problems(vn, roles, min_chars)
    return NoteFacts(vn.rel, vn.id, vn.path.suffix, vn.aliases, frontmatter_id(vn), targets, problems)


def _scan_range(bounds: tuple[int, int]) -> Chunk:
    """Parse files[start:end] of the job; mojibake notes wait for the vault's character frequencies."""
    assert _JOB is not None
    job, out = _JOB, Chunk()
    with no_gc_pauses():
        for i in range(*bounds):
            path = job.files[i]
            try:
                raw, text, bom = read_note_text(path)
                if mojibake.looks_mojibake(text):
                    out.deferred.append(i)
                    continue
                vn = _build(path, job.root, job.roles, raw, text, bom, None, clean=True)
                out.facts.append(facts_of(vn, job.roles, job.min_chars))
                out.sampled.append((i, len(text)))
            except NoteError as exc:
                out.errors.append(error_problem(exc, job.root))
    return out


def _repair_some(args: tuple[list[int], dict[str, float]]) -> Chunk:
    """Parse the deferred mojibake notes with the vault's character frequencies."""
    assert _JOB is not None
    job, out = _JOB, Chunk()
    indexes, freq = args
    for i in indexes:
        try:
            vn = _build(job.files[i], job.root, job.roles, *read_note_text(job.files[i]), freq)
            out.facts.append(facts_of(vn, job.roles, job.min_chars))
        except NoteError as exc:
            out.errors.append(error_problem(exc, job.root))
    return out


def workers() -> int:
    """How many processes a parallel check uses (0: run serially)."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return 0
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(n, 8) if n > 1 else 0


def check_files(
    root: Path, files: list[Path], roles: RoleTable, min_chars: int, n: int, progress: Progress | None = None
) -> CheckReport:
    """Check the note files of the vault at root with n processes (the caller's included)."""
    global _JOB
    _JOB = _Job(root, roles, min_chars, files)
    try:
        with multiprocessing.get_context("fork").Pool(n - 1) as pool:
            chunks = _fan_out(pool, _scan_range, _ranges(len(files), n))
            if progress:
                progress(len(files), len(files))
            deferred = [i for c in chunks for i in c.deferred]
            if deferred:
                freq = _frequencies(chunks, files)
                chunks += _fan_out(pool, _repair_some, [(part, freq) for part in _split(deferred, n)])
    finally:
        _JOB = None
    with no_gc_pauses():
        return _report(chunks, len(files))


def _fan_out(pool: multiprocessing.pool.Pool, fn: Callable[..., Chunk], args: list) -> list[Chunk]:  # type: ignore[type-arg]
    """Run fn over args: the first part here, the others in the pool at the same time."""
    pending = pool.map_async(fn, args[1:]) if len(args) > 1 else None
    first = [fn(args[0])] if args else []
    return first + (pending.get() if pending is not None else [])


def _ranges(total: int, n: int) -> list[tuple[int, int]]:
    """n contiguous (start, end) ranges covering total items."""
    return [(k * total // n, (k + 1) * total // n) for k in range(n)]


def _split(items: list[int], n: int) -> list[list[int]]:
    """Up to n non-empty contiguous parts of items."""
    return [part for a, b in _ranges(len(items), n) if (part := items[a:b])]


def _frequencies(chunks: list[Chunk], files: list[Path]) -> dict[str, float]:
    """Character frequencies exactly as the serial scan computes them (the same sampled notes)."""
    sampled = [item for c in chunks for item in c.sampled]  # file order: chunks are contiguous and in order
    picked, cap = charfreq.sample_plan([length for _, length in sampled])
    texts = [read_note_text(files[sampled[k][0]])[1] for k in picked]
    return with_default_frequencies(charfreq.sampled_frequencies(texts, cap))


def _report(chunks: list[Chunk], files: int) -> CheckReport:
    """Join the workers' facts into one report, adding dangling links and duplicate ids."""
    facts = [f for c in chunks for f in c.facts]
    if any(c.deferred for c in chunks):
        facts.sort(key=lambda f: f.rel)  # the note order of the serial scan, so ambiguous links resolve alike
    index: LinkIndex[NoteFacts] = LinkIndex()
    for f in facts:
        index.add(f, f.id, f.rel, f.suffix, f.aliases)
    report = CheckReport(notes=files)
    report.problems = [p for c in chunks for p in c.errors]
    for f in facts:
        report.problems += f.problems
        report.problems += [
            Problem(f.rel, "dangling-link", f"[[{t}]] matches no note") for t in f.targets if index.resolve(t) is None
        ]
    report.problems += duplicate_ids((f.rel, f.id, f.fid) for f in facts)
    sort_problems(report.problems)
    return report
