"""Every completed model call, keyed by a hash of what was asked, in one SQLite file.

A resumed run asks the same questions (same prompts, same per-record seeds), finds the answers
here and spends no tokens on them. SQLite in WAL mode: a process killed at any moment leaves every
committed answer readable and nothing half-written (`synchronous=NORMAL` skips the per-commit
fsync, which only a power loss would need). Inside an event loop, answers are committed together
at most `commit_interval` seconds after the first of them (a transaction per answer cost more CPU
than the rest of the cache at a thousand calls a second), and `commit` is called before any result
that used them is written: a kill loses at most the answers of that last fraction of a second,
which the resumed run asks again. Outside an event loop every answer is committed at once.
"""
from __future__ import annotations

import asyncio
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
        self.commit_interval = 0.05
        self._open = False  # a transaction holds answers not yet committed
        self._timer: asyncio.TimerHandle | None = None
        self._failed: OutputError | None = None  # a timed commit's error, raised by the next put or commit

    def get(self, key: str) -> dict | None:
        row = self._db.execute("SELECT value FROM calls WHERE key = ?", (key,)).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return json.loads(row[0])

    def put(self, key: str, value: dict) -> None:
        """First answer wins: a key already present keeps its value (a resumed run stays the same)."""
        if self._failed is not None:
            raise self._failed
        try:
            if not self._open:
                self._db.execute("BEGIN")
                self._open = True
            self._db.execute("INSERT OR IGNORE INTO calls (key, value) VALUES (?, ?)",
                             (key, json.dumps(value, ensure_ascii=False)))
        except sqlite3.OperationalError as err:  # full disk, read-only file system
            raise self._error(err) from None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.commit()
            return
        if self._timer is None:
            self._timer = loop.call_later(self.commit_interval, self._timed_commit)

    def commit(self) -> None:
        """Make every answer put so far durable (against a killed process)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._failed is not None:
            raise self._failed
        if self._open:
            try:
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as err:
                raise self._error(err) from None
            self._open = False

    def _timed_commit(self) -> None:
        self._timer = None
        try:
            self.commit()
        except OutputError as err:
            self._failed = err

    def _error(self, err: sqlite3.OperationalError) -> OutputError:
        return OutputError(f"cannot write {self.path}: {err}; the answers already cached are kept, rerun the same "
                           f"command to resume once it is writable")

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]

    def close(self) -> None:
        """Commit what is left (an error here was already raised by a put or commit) and close."""
        try:
            self.commit()
        except OutputError:
            pass
        self._db.close()
