"""Every completed model call, keyed by a hash of what was asked, in one SQLite file.

A resumed run asks the same questions (same prompts, same per-record seeds), finds the answers
here and spends no tokens on them. SQLite in WAL mode commits each answer as its own transaction:
a process killed at any moment leaves every committed answer readable and nothing half-written
(`synchronous=NORMAL` skips the per-commit fsync, which only a power loss would need).
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

from nemotron.sdg.store import OutputError


def call_key(kind: str, model: str, payload: dict) -> str:
    """Content hash of a call: its kind ("chat", "reward"), model name and request payload
    (messages and sampling parameters); key order does not matter."""
    blob = json.dumps([kind, model, payload], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


class CallCache:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # isolation_level=None: autocommit, each INSERT is one durable transaction.
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        except sqlite3.OperationalError as err:
            raise self._error(err) from None
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> dict | None:
        row = self._db.execute("SELECT value FROM calls WHERE key = ?", (key,)).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return json.loads(row[0])

    def put(self, key: str, value: dict) -> None:
        """First answer wins: a key already present keeps its value (a resumed run stays the same)."""
        try:
            self._db.execute("INSERT OR IGNORE INTO calls (key, value) VALUES (?, ?)",
                             (key, json.dumps(value, ensure_ascii=False)))
        except sqlite3.OperationalError as err:  # full disk, read-only file system
            raise self._error(err) from None

    def _error(self, err: sqlite3.OperationalError) -> OutputError:
        return OutputError(f"cannot write {self.path}: {err}; the answers already cached are kept, rerun the same "
                           f"command to resume once it is writable")

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]

    def close(self) -> None:
        self._db.close()
