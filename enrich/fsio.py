"""Safe file writes: temp file in the same folder, fsync, os.replace; never outside the vault."""

from __future__ import annotations

import hashlib
import itertools
import marshal
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import UnsafePathError


@lru_cache(maxsize=64)
def _real_root(root: Path) -> Path:
    """The real path of a vault root (if it is moved meanwhile, writes are refused, never misplaced)."""
    return Path(os.path.realpath(root))


def ensure_inside(path: Path, root: Path) -> Path:
    """Return the real path of `path`, raising UnsafePathError if it leaves `root`."""
    real = real_path(path)
    real_root = os.fspath(_real_root(root))
    if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
        raise UnsafePathError(path, f"resolves outside the vault ({real})")
    return Path(real)


_folders: dict[str, tuple[tuple[int, int], str]] = {}  # folder -> ((st_dev, st_ino), its real path)


def real_path(path: Path) -> str:
    """os.path.realpath(path), with each folder's real path remembered while it is still the same directory.

    A folder is stat'ed (following links) every time: if it was replaced, by another folder or a link to one,
    its inode differs and its real path is looked up again. A note that is itself a link is resolved in full.
    """
    folder, name = os.path.split(os.path.abspath(path))
    try:
        st = os.stat(folder)
    except OSError:
        return os.path.realpath(path)
    key = (st.st_dev, st.st_ino)
    hit = _folders.get(folder)
    if hit is None or hit[0] != key:
        if len(_folders) > 4096:
            _folders.clear()
        hit = _folders[folder] = (key, os.path.realpath(folder))
    full = os.path.join(hit[1], name)
    if name in ("", ".", "..") or os.path.islink(full):
        return os.path.realpath(path)
    return full


def read_bytes(path: Path) -> bytes:
    """A whole file, read with os calls (about half the cost of Path.read_bytes)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, root: Path | None = None, *, sync_dir: bool = True) -> Path:
    """Write bytes atomically; with `root`, refuse targets (or symlinks) outside it; return the real target.

    sync_dir=False leaves the folder's fsync to the caller (one per folder for a batch of files).
    """
    target = ensure_inside(path, root) if root is not None else Path(os.path.realpath(path))
    write_real(target, data, sync_dir=sync_dir)
    return target


def write_real(target: Path, data: bytes, *, sync_dir: bool = True) -> None:
    """Write bytes atomically to a path already resolved (and checked) by the caller; keep its permissions."""
    try:
        mode = os.stat(target).st_mode & 0o7777
    except FileNotFoundError:
        target.parent.mkdir(parents=True, exist_ok=True)
        mode = _default_mode()
    tmp = stage(target, data, mode)
    try:
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if sync_dir:
        fsync_dir(target.parent)


def stage(target: Path, data: bytes, mode: int) -> str:
    """Write and fsync data to a new temp file beside target with the given permissions; return its path.

    On failure the temp file is removed and the error raised; the caller renames the temp file over target.
    """
    fd, tmp = _temp_file(target)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            _chmod(fh.fileno(), tmp, mode)
            os.fsync(fh.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def _chmod(fd: int, path: str, mode: int) -> None:
    """Set a temp file's permissions through its descriptor where the platform allows."""
    if hasattr(os, "fchmod"):
        os.fchmod(fd, mode)
    else:  # pragma: no cover - Windows before 3.13
        os.chmod(path, mode)


_serial = itertools.count()


def _temp_file(target: Path) -> tuple[int, str]:
    """Create a new hidden temp file beside target (exclusive create, 0600); return its fd and path."""
    folder, name = os.fspath(target.parent), target.name
    while True:
        tmp = os.path.join(folder, f".{name}.{os.getpid()}-{next(_serial)}.enrich-tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600), tmp
        except FileExistsError:
            continue  # a leftover of an earlier process with the same pid


def _default_mode() -> int:
    """Permissions a new file gets from the umask (mkstemp would leave 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def fsync_dir(folder: Path) -> None:
    """Flush a directory entry so a rename survives a crash (best effort)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_cache_file(path: Path, value: Any) -> None:
    """Write a marshal-able value with its SHA-256 in front, atomically; best effort (an unwritable place: no file)."""
    blob = marshal.dumps(value)
    try:
        atomic_write(path, hashlib.sha256(blob).digest() + blob, sync_dir=False)
    except OSError:
        pass


def read_cache_file(path: Path) -> Any:
    """The value write_cache_file stored, or None when the file is missing, unreadable or damaged."""
    try:
        raw = path.read_bytes()
        digest, blob = raw[:32], raw[32:]
        return marshal.loads(blob) if hashlib.sha256(blob).digest() == digest else None
    except (OSError, EOFError, ValueError, TypeError):
        return None
