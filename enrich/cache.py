"""SQLite cache of validated LLM results, keyed by everything that shaped the request."""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
)
"""


def request_key(model: str, prompt_version: str, messages: list[dict[str, str]], schema: dict[str, Any]) -> str:
    """Hash of the model, prompt version, messages and schema of one request."""
    blob = json.dumps([model, prompt_version, messages, schema], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class Cache:
    """A small key/value store of validated results in `<vault>/.enrich/cache.sqlite`.

    It only holds results that can be asked for again, so it never stops a run: an unreadable file is moved
    aside and replaced, and a database error during the run turns the cache off with a warning.
    """

    def __init__(self, path: Path | None, warn: Callable[[str], None] | None = None) -> None:
        self.path = path
        self._warn = warn or (lambda _: None)
        self._db: sqlite3.Connection | None = None
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = self._open(path)
        except sqlite3.DatabaseError as exc:
            if not path.is_file() or isinstance(exc, sqlite3.OperationalError):
                self._off(exc)
                return
            aside = path.with_name(f"{path.name}.broken-{time.strftime('%Y%m%dT%H%M%S')}")
            for suffix in ("", "-wal", "-shm"):
                if Path(f"{path}{suffix}").exists():
                    Path(f"{path}{suffix}").rename(f"{aside}{suffix}")
            self._warn(f"{path} was not a readable cache ({exc}); moved it to {aside.name} and started an empty one")
            self._db = self._open(path)
        except OSError as exc:
            self._off(exc)

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        """Connect, set WAL mode and create the table."""
        db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL stays consistent; a crash may lose the last results only
            db.execute(SCHEMA)
        except sqlite3.Error:
            db.close()
            raise
        return db

    def _off(self, exc: BaseException) -> None:
        """Stop using the cache for the rest of the run."""
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
        self._db = None
        self._warn(f"result cache {self.path} is off for this run: {exc}")

    def get(self, key: str) -> tuple[dict[str, Any], int, int] | None:
        """Return (value, prompt_tokens, completion_tokens) for a key, or None."""
        if self._db is None:
            return None
        try:
            row = self._db.execute(
                "SELECT value, prompt_tokens, completion_tokens FROM results WHERE key = ?", (key,)
            ).fetchone()
            return (json.loads(row[0]), int(row[1]), int(row[2])) if row else None
        except (sqlite3.Error, ValueError, TypeError) as exc:
            self._off(exc)
            return None

    def put(self, key: str, value: dict[str, Any], model: str, prompt_tokens: int, completion_tokens: int) -> None:
        """Store a validated result."""
        if self._db is None:
            return
        try:
            self._db.execute(
                "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?)",
                (key, json.dumps(value, ensure_ascii=False), model, prompt_tokens, completion_tokens, time.time()),
            )
        except sqlite3.Error as exc:
            self._off(exc)

    def close(self) -> None:
        """Close the database."""
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
