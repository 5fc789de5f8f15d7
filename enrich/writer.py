"""Writing enriched notes: journal first, then an atomic replace; notes finished together share fsyncs.

Each note is still written on its own (temp file, fsync, os.replace), but the notes whose answers arrive in
the same turn of the event loop are journaled with one manifest fsync and their folders are synced once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from .errors import NoteError
from .fsio import ensure_inside, fsync_dir, read_bytes, write_real
from .journal import Journal
from .vault import VaultNote

_Item = tuple[VaultNote, bytes, "asyncio.Future[None]"]


class NoteWriter:
    """Writes notes of one run, batching the journal and folder fsyncs."""

    def __init__(self, root: Path, command: str = "run") -> None:
        self.root = root
        self.command = command
        self.journal: Journal | None = None
        self._pending: list[_Item] = []
        self._scheduled = False

    async def write(self, vn: VaultNote, data: bytes) -> None:
        """Write one note (NoteError if it changed on disk or cannot be written); a flushed write is never undone."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._pending.append((vn, data, done))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        try:
            await done
        except asyncio.CancelledError:
            if done.cancelled():
                raise  # cancelled before its batch was flushed: the file was not touched
            if done.exception() is None:
                return  # written in a batch flushed just before the cancellation arrived: count it
            raise

    def close(self) -> None:
        """Close the journal's open files (the run is over)."""
        if self.journal is not None:
            self.journal.close()

    def _flush(self) -> None:
        """Write every pending note: check, journal (one fsync), replace each, fsync each folder once."""
        items = [item for item in self._pending if not item[2].done()]
        self._pending, self._scheduled = [], False
        ready = [(item, real) for item in items if (real := self._target(item)) is not None and self._unchanged(item)]
        if not ready or not self._journaled(ready):
            return
        written: list[_Item] = []
        folders: set[Path] = set()
        for (vn, data, done), real in ready:
            try:
                write_real(real, data, sync_dir=False)
            except OSError as exc:
                done.set_exception(NoteError(vn.path, f"cannot write: {exc.strerror or exc}"))
            else:
                folders.add(real.parent)
                written.append((vn, data, done))
        for folder in folders:
            fsync_dir(folder)
        for _, _, done in written:
            done.set_result(None)

    def _target(self, item: _Item) -> Path | None:
        """The real path the note will be written to (resolved once), or None after failing an unsafe one."""
        try:
            return ensure_inside(item[0].path, self.root)
        except NoteError as exc:
            item[2].set_exception(exc)
            return None

    def _unchanged(self, item: _Item) -> bool:
        """True when the file still holds what was read; otherwise fail the item."""
        vn, _, done = item
        try:
            current = read_bytes(vn.path)
        except OSError as exc:
            done.set_exception(NoteError(vn.path, f"cannot read before writing: {exc.strerror}"))
            return False
        if current != vn.raw:
            done.set_exception(NoteError(vn.path, "changed on disk during the run; left untouched"))
            return False
        return True

    def _journaled(self, items: list[tuple[_Item, Path]]) -> bool:
        """Record the originals of items in the undo journal; fail them all if that is impossible."""
        try:
            if self.journal is None:
                self.journal = Journal(self.root, self.command, keep_open=True)
            self.journal.record_many([(real, vn.raw, data) for (vn, data, _), real in items], real=True)
        except (OSError, ValueError) as exc:
            for (vn, _, done), _ in items:
                done.set_exception(NoteError(vn.path, f"cannot record it in the undo journal: {exc}"))
            return False
        return True
