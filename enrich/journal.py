"""Undo journal: the original bytes of every file a run changes, under `<vault>/.enrich/journal/`."""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .errors import EnrichError
from .fsio import atomic_write

MANIFEST = "manifest.jsonl"


def _sha(data: bytes) -> str:
    """Hex SHA-256 of bytes."""
    return hashlib.sha256(data).hexdigest()


class Journal:
    """Records, before each write, what the file held; `undo` puts it back.

    The manifest is append-only JSON lines (one fsync per entry), so a run of N notes costs O(N).
    """

    def __init__(self, vault_root: Path, command: str) -> None:
        self.root = vault_root
        self._real_root = vault_root.resolve()
        stamp = time.strftime("%Y%m%dT%H%M%S") + f"-{time.time_ns() % 1_000_000:06d}"
        self.dir = vault_root / ".enrich" / "journal" / stamp
        self.entries: list[dict[str, Any]] = []
        self.command = command

    def _entry(self, path: Path, original: bytes | None, new: bytes) -> dict[str, Any]:
        """Save the original bytes and describe one file."""
        n = len(self.entries)
        if original is not None:
            (self.dir / f"{n:05d}.orig").write_bytes(original)
        rel = path.resolve().relative_to(self._real_root).as_posix()
        entry = {"path": rel, "orig": None if original is None else f"{n:05d}.orig", "written": _sha(new)}
        self.entries.append(entry)
        return entry

    def record(self, path: Path, original: bytes | None, new: bytes) -> None:
        """Save the original (None for a new file) before `path` is written with `new`."""
        self.record_many([(path, original, new)])

    def record_all(self, items: Sequence[tuple[Path, bytes]]) -> None:
        """Record new files (no original) with one manifest append."""
        self.record_many([(path, None, data) for path, data in items])

    def record_many(self, items: Sequence[tuple[Path, bytes | None, bytes]]) -> None:
        """Record several files, then append their entries with one fsync."""
        self.dir.mkdir(parents=True, exist_ok=True)
        lines = [self._entry(p, o, n) for p, o, n in items]
        manifest = self.dir / MANIFEST
        with manifest.open("a", encoding="utf-8") as fh:
            if fh.tell() == 0:
                fh.write(json.dumps({"command": self.command}) + "\n")
            fh.write("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in lines))
            fh.flush()
            os.fsync(fh.fileno())

    def forget(self, rels: set[str]) -> None:
        """Drop entries for files that were never written, so `undo` does not look for them."""
        if not rels:
            return
        self.entries = [e for e in self.entries if e["path"] not in rels]
        body = json.dumps({"command": self.command}) + "\n"
        body += "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in self.entries)
        atomic_write(self.dir / MANIFEST, body.encode("utf-8"))


def read_manifest(run: Path) -> list[dict[str, Any]]:
    """Entries of one journal, ignoring a torn last line from a crash."""
    entries: list[dict[str, Any]] = []
    for line in (run / MANIFEST).read_text(encoding="utf-8").splitlines()[1:]:
        try:
            entries.append(json.loads(line))
        except ValueError:
            break
    return entries


@dataclass
class UndoReport:
    """What `enrich undo` did."""

    run: str
    restored: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _last_run(vault_root: Path) -> Path:
    """The newest journal folder with a manifest."""
    base = vault_root / ".enrich" / "journal"
    runs = sorted(p for p in base.glob("*") if (p / MANIFEST).is_file()) if base.is_dir() else []
    if not runs:
        raise EnrichError(f"nothing to undo in {vault_root}: no journal under .enrich/journal")
    return runs[-1]


def undo_last(vault_root: Path) -> UndoReport:
    """Restore the files of the last run, unless they changed since; then drop that journal."""
    run = _last_run(vault_root)
    report = UndoReport(run.name)
    for entry in reversed(read_manifest(run)):
        _undo_one(vault_root, run, entry, report)
    (run / MANIFEST).rename(run / "manifest.undone.jsonl")
    return report


def _undo_one(root: Path, run: Path, entry: dict[str, Any], report: UndoReport) -> None:
    """Restore or remove one file if it still holds what the run wrote."""
    path = root / entry["path"]
    current = path.read_bytes() if path.exists() else None
    if current is None or _sha(current) != entry["written"]:
        report.skipped.append((entry["path"], "changed since the run" if current else "missing"))
        return
    if entry["orig"] is None:
        path.unlink()
        report.removed.append(entry["path"])
        return
    atomic_write(path, (run / entry["orig"]).read_bytes(), root)
    report.restored.append(entry["path"])
