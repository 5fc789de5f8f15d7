"""Undo journal: the original bytes of every file a run changes, under `<vault>/.enrich/journal/`."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import EnrichError
from .fsio import atomic_write


def _sha(data: bytes) -> str:
    """Hex SHA-256 of bytes."""
    return hashlib.sha256(data).hexdigest()


class Journal:
    """Records, before each write, what the file held; `undo` puts it back."""

    def __init__(self, vault_root: Path, command: str) -> None:
        self.root = vault_root
        stamp = time.strftime("%Y%m%dT%H%M%S") + f"-{time.time_ns() % 1_000_000:06d}"
        self.dir = vault_root / ".enrich" / "journal" / stamp
        self.entries: list[dict[str, Any]] = []
        self.command = command

    def record(self, path: Path, original: bytes | None, new: bytes) -> None:
        """Save the original (None for a new file) before `path` is written with `new`."""
        self.dir.mkdir(parents=True, exist_ok=True)
        n = len(self.entries)
        if original is not None:
            (self.dir / f"{n:05d}.orig").write_bytes(original)
        rel = path.resolve().relative_to(self.root.resolve()).as_posix()
        self.entries.append({"path": rel, "orig": None if original is None else f"{n:05d}.orig", "written": _sha(new)})
        self._save()

    def _save(self) -> None:
        """Write the manifest (atomically, after every entry)."""
        manifest = {"command": self.command, "entries": self.entries}
        atomic_write(self.dir / "manifest.json", json.dumps(manifest, ensure_ascii=False, indent=1).encode())


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
    runs = sorted(p for p in base.glob("*") if (p / "manifest.json").is_file()) if base.is_dir() else []
    if not runs:
        raise EnrichError(f"nothing to undo in {vault_root}: no journal under .enrich/journal")
    return runs[-1]


def undo_last(vault_root: Path) -> UndoReport:
    """Restore the files of the last run, unless they changed since; then drop that journal."""
    run = _last_run(vault_root)
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    report = UndoReport(run.name)
    for entry in reversed(manifest["entries"]):
        _undo_one(vault_root, run, entry, report)
    (run / "manifest.json").rename(run / "manifest.undone.json")
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
