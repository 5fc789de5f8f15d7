"""Undo journal: the original bytes of every file a run changes, under `<vault>/.enrich/journal/`."""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Sequence, TextIO

from .errors import EnrichError
from .fsio import atomic_write, ensure_inside, fsync_dir

MANIFEST = "manifest.jsonl"


def _sha(data: bytes) -> str:
    """Hex SHA-256 of bytes."""
    return hashlib.sha256(data).hexdigest()


class Journal:
    """Records, before each write, what the file held; `undo` puts it back.

    Each batch of writes adds one file of originals and appends to a JSON-lines manifest, both fsynced
    before any note of the batch is replaced, so a crash never leaves a changed note without its original.
    """

    def __init__(self, vault_root: Path, command: str, *, keep_open: bool = False) -> None:
        self.root = vault_root
        self._real_root = vault_root.resolve()
        stamp = time.strftime("%Y%m%dT%H%M%S") + f"-{time.time_ns() % 1_000_000:06d}"
        self.dir = vault_root / ".enrich" / "journal" / stamp
        self.entries: list[dict[str, Any]] = []
        self.command = command
        self.keep_open = keep_open  # keep the originals and manifest files open between records (close() them)
        self._made = False  # the journal folder exists (made by this journal)
        self._files = 0  # originals files created
        self._origs: BinaryIO | None = None
        self._origs_name, self._origs_size = "", 0
        self._manifest: TextIO | None = None

    def _entry(self, path: Path, new: bytes, orig: tuple[str, int, int] | None, real: bool) -> dict[str, Any]:
        """Describe one file: where its original bytes are kept (file, offset, length) and what was written."""
        rel = (path if real else path.resolve()).relative_to(self._real_root).as_posix()
        entry: dict[str, Any] = {"path": rel, "orig": None, "written": _sha(new)}
        if orig is not None:
            entry["orig"], entry["at"] = orig[0], [orig[1], orig[2]]
        self.entries.append(entry)
        return entry

    def record(self, path: Path, original: bytes | None, new: bytes) -> None:
        """Save the original (None for a new file) before `path` is written with `new`."""
        self.record_many([(path, original, new)])

    def record_all(self, items: Sequence[tuple[Path, bytes]]) -> None:
        """Record new files (no original) with one manifest append."""
        self.record_many([(path, None, data) for path, data in items])

    def record_many(self, items: Sequence[tuple[Path, bytes | None, bytes]], *, real: bool = False) -> None:
        """Record several files durably before any is written: originals in one file, then one manifest append.

        Up to three fsyncs per call whatever its size: the originals, the manifest, and the journal folder when a
        file was created in it. real=True: the paths are already resolved (the caller checked them).
        """
        first = False
        if not self._made:
            first = not self.dir.is_dir()
            self.dir.mkdir(parents=True, exist_ok=True)
            self._made = True
        blob, spans, created = self._save_originals([o for _, o, _ in items])
        spans.reverse()
        lines = [self._entry(p, n, (blob, *spans.pop()) if o is not None else None, real) for p, o, n in items]
        fh = self._manifest if self._manifest is not None else (self.dir / MANIFEST).open("a", encoding="utf-8")
        try:
            if fh.tell() == 0:
                fh.write(json.dumps({"command": self.command}) + "\n")
                created = True
            fh.write("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in lines))
            fh.flush()
            os.fsync(fh.fileno())
        except BaseException:
            fh.close()  # the next record opens it again, as without keep_open
            self._manifest = None
            raise
        if self.keep_open:
            self._manifest = fh
        else:
            fh.close()
        if created:  # the new files' names; on the first call also run/, journal/ and .enrich/ themselves
            for folder in [self.dir, *(self.dir.parents[:3] if first else [])]:
                fsync_dir(folder)

    def _save_originals(self, originals: Sequence[bytes | None]) -> tuple[str, list[tuple[int, int]], bool]:
        """Write the originals into the open originals file, else a new one (fsynced).

        Returns its name, each one's (offset, length), and whether the file was created.
        """
        kept = [o for o in originals if o is not None]
        if not kept:
            return "", [], False
        created = self._origs is None
        if self._origs is None:
            self._files += 1
            self._origs_name, self._origs_size = f"{self._files:05d}.origs", 0
            self._origs = open(self.dir / self._origs_name, "xb")  # never over an earlier file
        fh, offset = self._origs, self._origs_size
        spans: list[tuple[int, int]] = []
        for data in kept:
            spans.append((offset, len(data)))
            offset += len(data)
        try:
            fh.write(b"".join(kept))
            fh.flush()
            os.fsync(fh.fileno())
        except BaseException:
            fh.close()  # how much reached the file is unknown: later originals go to a new file
            self._origs = None
            raise
        self._origs_size = offset
        if not self.keep_open:
            fh.close()
            self._origs = None
        return self._origs_name, spans, created

    def close(self) -> None:
        """Close the files kept open (keep_open); the next record opens them again."""
        for fh in (self._origs, self._manifest):
            if fh is not None:
                fh.close()
        self._origs = self._manifest = None

    def forget(self, rels: set[str]) -> None:
        """Drop entries for files that were never written, so `undo` does not look for them."""
        if not rels:
            return
        self.entries = [e for e in self.entries if e["path"] not in rels]
        self.close()  # the manifest is replaced below: a kept handle would append to the old file
        body = json.dumps({"command": self.command}) + "\n"
        body += "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in self.entries)
        atomic_write(self.dir / MANIFEST, body.encode("utf-8"))


def read_manifest(run: Path) -> list[dict[str, Any]]:
    """Entries of one journal, ignoring a torn last line from a crash."""
    entries: list[dict[str, Any]] = []
    for line in (run / MANIFEST).read_text(encoding="utf-8", errors="replace").splitlines()[1:]:
        try:
            entry = json.loads(line)
        except ValueError:
            break
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def original_bytes(run: Path, entry: dict[str, Any]) -> bytes:
    """The original bytes of one entry: a slice of a batch's .origs file, or (older journals) a whole .orig file."""
    data = (run / str(entry["orig"])).read_bytes()
    if "at" in entry:
        offset, length = int(entry["at"][0]), int(entry["at"][1])
        data = data[offset : offset + length]
        if len(data) != length:
            raise ValueError(f"{entry['orig']} is shorter than the journal says")
    return data


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
    try:
        entries = read_manifest(run)
    except OSError as exc:
        raise EnrichError(f"cannot read the journal {run / MANIFEST}: {exc.strerror or exc}") from exc
    for entry in reversed(entries):
        _undo_one(vault_root, run, entry, report)
    try:
        (run / MANIFEST).rename(run / "manifest.undone.jsonl")
    except OSError as exc:
        raise EnrichError(f"undone, but cannot mark the journal {run.name} as undone: {exc.strerror or exc}") from exc
    return report


def _undo_one(root: Path, run: Path, entry: dict[str, Any], report: UndoReport) -> None:
    """Restore or remove one file if it still holds what the run wrote; a damaged journal entry is skipped."""
    name = str(entry.get("path", "?"))
    try:
        path = ensure_inside(root / name, root)
        current = path.read_bytes() if path.exists() else None
        if current is None or _sha(current) != entry["written"]:
            report.skipped.append((name, "changed since the run" if current else "missing"))
            return
        if entry["orig"] is None:
            path.unlink()
            report.removed.append(name)
            return
        atomic_write(path, original_bytes(run, entry), root)
    except (OSError, KeyError, TypeError, ValueError, EnrichError) as exc:
        reason = str(exc)
        if isinstance(exc, OSError) and exc.strerror:
            reason = exc.strerror + (f" ({Path(str(exc.filename)).name})" if exc.filename else "")
        report.skipped.append((name, f"cannot restore it from the journal: {reason}"))
        return
    report.restored.append(name)
