"""SQLite cache of validated LLM results, keyed by everything that shaped the request."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

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
    """A small key/value store of validated results in `<vault>/.enrich/cache.sqlite`."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL stays consistent; a crash may lose the last results only
            self._db.execute(SCHEMA)

    def get(self, key: str) -> tuple[dict[str, Any], int, int] | None:
        """Return (value, prompt_tokens, completion_tokens) for a key, or None."""
        if self._db is None:
            return None
        row = self._db.execute(
            "SELECT value, prompt_tokens, completion_tokens FROM results WHERE key = ?", (key,)
        ).fetchone()
        return (json.loads(row[0]), int(row[1]), int(row[2])) if row else None

    def put(self, key: str, value: dict[str, Any], model: str, prompt_tokens: int, completion_tokens: int) -> None:
        """Store a validated result."""
        if self._db is None:
            return
        self._db.execute(
            "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?)",
            (key, json.dumps(value, ensure_ascii=False), model, prompt_tokens, completion_tokens, time.time()),
        )

    def close(self) -> None:
        """Close the database."""
        if self._db is not None:
            self._db.close()
            self._db = None
