"""Every completed model call, keyed by a hash of what was asked, in one SQLite file.

A resumed run asks the same questions (same prompts, same per-record seeds), finds the answers
here and spends no tokens on them. SQLite in WAL mode: a process killed at any moment leaves every
committed answer readable and nothing half-written (`synchronous=NORMAL` skips the per-commit
fsync, which only a power loss would need).

Writes leave the caller's thread: `put` keeps the answer in memory (where `get` finds it at once),
and one writer thread inserts what was put, one `executemany` and one commit per batch. Inside an
event loop a batch goes at most `commit_interval` seconds after its first answer (at a thousand
calls a second, an INSERT and a share of a commit per call on the loop were a tenth of its time);
outside one, `put` waits for its answer's commit. `after_commit(write)` runs `write` on that same
thread once every answer put before it is committed: the scheduler writes results through it, so
a result is on disk only after the answers it used, and a kill loses at most the answers of the
last fraction of a second, which the resumed run asks again. Reads use their own connection, so a
commit in progress never blocks one (WAL readers do not wait for the writer).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from nemotron.sdg.store import OutputError

T = TypeVar("T")


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
            # isolation_level=None: transactions are ours (BEGIN ... COMMIT per batch).
            self._db = self._connect()  # the writer thread's
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._reader = self._connect()  # the caller's
        except sqlite3.OperationalError as err:
            raise self._error(err) from None
        self.hits = 0
        self.misses = 0
        self.commit_interval = 0.05
        self._unsaved: dict[str, str] = {}  # put, not yet handed to the writer
        self._saving: dict[str, str] = {}  # handed to the writer, not yet committed (it removes them)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="sdg-cache")
        self._timer: asyncio.TimerHandle | None = None
        self._failed: OutputError | None = None  # a write's error, raised by every later put, commit or write

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)

    def get(self, key: str) -> dict | None:
        value = self._unsaved.get(key) or self._saving.get(key)
        if value is None:
            row = self._reader.execute("SELECT value FROM calls WHERE key = ?", (key,)).fetchone()
            if row is None:
                self.misses += 1
                return None
            value = row[0]
        self.hits += 1
        return json.loads(value)

    def put(self, key: str, value: dict) -> None:
        """First answer wins: a key already present keeps its value (a resumed run stays the same)."""
        if self._failed is not None:
            raise self._failed
        if key in self._unsaved or key in self._saving:
            return
        # Not buffered: maybe already committed (this run, then popped from `_saving`, or an earlier
        # one). The writer pops a key only after its commit, so this read sees it then.
        if self._reader.execute("SELECT 1 FROM calls WHERE key = ?", (key,)).fetchone() is not None:
            return
        self._unsaved[key] = json.dumps(value, ensure_ascii=False)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.commit()
            return
        if self._timer is None:
            self._timer = loop.call_later(self.commit_interval, self._hand_over)

    def _hand_over(self) -> Future | None:
        """Give the answers put so far to the writer; its task, or None when there were none."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._unsaved:
            return None
        batch, self._unsaved = self._unsaved, {}
        self._saving.update(batch)
        return self._writer.submit(self._insert, batch)

    def _insert(self, batch: dict[str, str]) -> None:  # on the writer thread
        if self._failed is not None:
            raise self._failed
        try:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR IGNORE INTO calls (key, value) VALUES (?, ?)", batch.items())
            self._db.execute("COMMIT")
        except BaseException as err:  # full disk, read-only file system, a corrupt file, no memory...
            # Whatever it was, nothing of the batch may count as committed: roll back, and fail every
            # later put, commit and write (a result must never reference an uncommitted answer).
            try:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
            except BaseException:
                pass  # the error is the one below
            self._failed = self._error(err)
            raise self._failed from err
        for key in batch:
            self._saving.pop(key, None)

    def after_commit(self, write: Callable[[], T]) -> Future:
        """Run `write` on the writer thread once every answer put so far is committed (not at all
        if a commit failed: its future then holds that error)."""
        if self._failed is not None:
            raise self._failed
        self._hand_over()

        def then() -> T:
            if self._failed is not None:
                raise self._failed
            return write()

        return self._writer.submit(then)

    def commit(self) -> None:
        """Make every answer put so far durable (against a killed process); waits for it. Raises only
        a failed commit's error, never one of an `after_commit` write (its own future holds that)."""
        if self._failed is not None:
            raise self._failed
        self._hand_over()
        self._writer.submit(_barrier).result()  # tasks run in order: the barrier done, all before it are
        if self._failed is not None:
            raise self._failed

    def _error(self, err: BaseException) -> OutputError:
        reason = str(err) or type(err).__name__
        return OutputError(f"cannot write {self.path}: {reason}; the answers already cached are kept, rerun the same "
                           f"command to resume once it is writable")

    def __len__(self) -> int:
        """Answers committed (and so readable by another process)."""
        return self._reader.execute("SELECT COUNT(*) FROM calls").fetchone()[0]

    def close(self) -> None:
        """Commit what is left (an error here was already raised by a put or commit) and close."""
        try:
            self.commit()
        except OutputError:
            pass
        finally:
            try:
                self._writer.shutdown(wait=True)
            finally:
                self._reader.close()
                self._db.close()


def _barrier() -> None:
    """A writer task that does nothing: done, every task submitted before it is."""
