"""Append-only record files and the call cache: content ids, torn-tail repair, and survival of a
real SIGKILL in the middle of writing."""
from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from nemotron.sdg.cache import CallCache, call_key
from nemotron.sdg.store import RecordStore, content_id, read_jsonl, repair_tail, write_atomic

REPO = Path(__file__).resolve().parents[2]


def test_content_id_is_stable_and_order_free():
    assert content_id("s", {"a": 1, "b": [1, 2]}) == content_id("s", {"b": [1, 2], "a": 1})
    assert content_id("s", {"a": 1}) != content_id("t", {"a": 1})
    assert len(content_id("x")) == 16


def test_append_skips_known_ids_across_reopen(tmp_path):
    path = tmp_path / "r.jsonl"
    with RecordStore(path) as store:
        assert store.append([{"id": "a", "v": 1}, {"id": "b", "v": 2}, {"id": "a", "v": 3}]) == 2
        assert store.append([{"id": "b", "v": 9}]) == 0
    with RecordStore(path) as store:
        assert "a" in store and len(store) == 2
        assert store.append([{"id": "a"}, {"id": "c", "v": 4}]) == 1
        assert [r["id"] for r in store] == ["a", "b", "c"]
        assert [r["v"] for r in store] == [1, 2, 4]  # the first version of an id wins


def test_torn_last_line_is_cut_on_open(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"id":"a"}\n{"id":"b"}\n{"id":"c","tex')
    assert [r["id"] for r in read_jsonl(path)] == ["a", "b"]  # readers never see the torn line
    with RecordStore(path) as store:
        assert store.repaired_bytes == len(b'{"id":"c","tex')
        assert store.ids == {"a", "b"}
        store.append([{"id": "c"}])
    assert path.read_bytes() == b'{"id":"a"}\n{"id":"b"}\n{"id":"c"}\n'
    assert repair_tail(path) == 0


def test_torn_file_without_any_newline(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"id":"a"')
    assert repair_tail(path) == 9 and path.read_bytes() == b""


def test_corrupt_complete_line_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"id":"a"}\nnot json\n')
    with pytest.raises(ValueError, match=r"r.jsonl:2"):
        list(read_jsonl(path))


def test_write_atomic_replaces_whole_file(tmp_path):
    path = tmp_path / "d" / "x.jsonl"
    assert write_atomic(path, [{"id": 1}, {"id": 2}]) == 2
    assert write_atomic(path, iter([{"id": 3}])) == 1
    assert list(read_jsonl(path)) == [{"id": 3}]
    assert not path.with_name("x.jsonl.tmp").exists()


def test_cache_keys_and_persistence(tmp_path):
    hi = [{"role": "user", "content": "hi"}]
    key = call_key("chat", "m", {"messages": hi, "seed": 1, "temperature": 0.5})
    assert key == call_key("chat", "m", {"temperature": 0.5, "seed": 1, "messages": [{"content": "hi", "role": "user"}]})
    assert key != call_key("chat", "m", {"messages": hi, "seed": 2, "temperature": 0.5})
    assert key != call_key("reward", "m", {"messages": hi, "seed": 1, "temperature": 0.5})
    cache = CallCache(tmp_path / "c.sqlite")
    assert cache.get(key) is None
    cache.put(key, {"text": "hello"})
    cache.put(key, {"text": "second"})  # first answer wins
    cache.close()
    cache = CallCache(tmp_path / "c.sqlite")
    assert cache.get(key) == {"text": "hello"} and len(cache) == 1 and cache.hits == 1
    cache.close()


WRITER = textwrap.dedent("""
    import sys
    from nemotron.sdg.cache import CallCache
    from nemotron.sdg.store import RecordStore
    store, cache = RecordStore(sys.argv[1]), CallCache(sys.argv[2])
    i = 0
    while True:
        cache.put(f"k{i}", {"text": "x" * 5000, "i": i})
        store.append([{"id": f"r{i}.{j}", "i": i, "pad": "y" * 3000} for j in range(8)])
        if i == 20:
            print("ready", flush=True)
        i += 1
""")


@pytest.mark.parametrize("delay", [0.05, 0.3])
def test_sigkill_while_writing_loses_nothing_committed(tmp_path, delay):
    """A writer is killed with SIGKILL at a random-ish moment; the files reopen cleanly, every
    record batch is whole or absent, and every cached answer is complete."""
    records, cache_path = tmp_path / "r.jsonl", tmp_path / "c.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(records), str(cache_path)], stdout=subprocess.PIPE,
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert proc.stdout.readline().strip() == b"ready"
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    with RecordStore(records) as store:
        rows = list(store)
    batches: dict[int, int] = {}
    for row in rows:
        batches[row["i"]] = batches.get(row["i"], 0) + 1
    assert len(rows) == len({r["id"] for r in rows}) and len(batches) > 20
    assert all(count == 8 for i, count in batches.items() if i < max(batches))  # only the last batch may be torn
    cache = CallCache(cache_path)
    assert len(cache) > 20
    for i in range(len(cache)):
        assert cache.get(f"k{i}") == {"text": "x" * 5000, "i": i}
    assert max(batches) <= len(cache)  # a batch is written only after its call was cached
    cache.close()


def test_cache_commits_answers_together_inside_a_loop_and_at_once_outside(tmp_path):
    path = tmp_path / "c.sqlite"
    cache = CallCache(path)
    committed = lambda: sqlite3.connect(path).execute("SELECT COUNT(*) FROM calls").fetchone()[0]  # noqa: E731
    cache.put("a", {"text": "1"})
    assert committed() == 1  # no event loop: at once

    async def in_loop():
        cache.put("b", {"text": "2"})
        cache.put("c", {"text": "3"})
        seen = [committed(), cache.get("c")]  # the cache itself sees its open transaction
        await asyncio.wrap_future(cache.after_commit(lambda: None))  # the timed commit, however slow
        seen.append(committed())
        cache.put("d", {"text": "4"})
        cache.commit()  # what the scheduler calls before writing results that used it
        seen.append(committed())
        return seen

    assert asyncio.run(in_loop()) == [1, {"text": "3"}, 3, 4]
    cache.close()


def test_first_answer_wins_after_its_commit_too(tmp_path):
    """A duplicate put after the first answer's commit (this run's or an earlier one's) changes
    nothing: get() keeps answering the first, before and after the next commit."""
    path = tmp_path / "c.sqlite"
    cache = CallCache(path)
    cache.put("old", {"text": "earlier run"})
    cache.close()
    cache = CallCache(path)

    async def in_loop():
        cache.put("a", {"text": "first"})
        await asyncio.wrap_future(cache.after_commit(lambda: None))
        cache.put("a", {"text": "second"})
        cache.put("old", {"text": "this run"})
        seen = [cache.get("a"), cache.get("old")]
        await asyncio.wrap_future(cache.after_commit(lambda: None))
        return seen + [cache.get("a"), cache.get("old")]

    assert asyncio.run(in_loop()) == [{"text": "first"}, {"text": "earlier run"}] * 2
    cache.close()
    reopened = CallCache(path)
    assert reopened.get("a") == {"text": "first"} and reopened.get("old") == {"text": "earlier run"}
    reopened.close()


def test_a_timed_commit_that_fails_is_raised_by_the_next_put(tmp_path):
    from nemotron.sdg.store import OutputError

    cache = CallCache(tmp_path / "c.sqlite")

    class Failing:
        """The connection on a disk that fills up: every commit fails."""

        def __init__(self, db):
            self.db = db

        def execute(self, sql, *args):
            if sql == "COMMIT":
                raise sqlite3.OperationalError("database or disk is full")
            return self.db.execute(sql, *args)

        def __getattr__(self, name):
            return getattr(self.db, name)

    cache._db = Failing(cache._db)  # the writer thread's connection

    async def in_loop():
        cache.put("a", {"text": "1"})
        with pytest.raises(OutputError, match="disk is full"):  # waits for the commit, however slow
            await asyncio.wrap_future(cache.after_commit(lambda: None))
        with pytest.raises(OutputError, match="disk is full"):
            cache.put("b", {"text": "2"})
        with pytest.raises(OutputError, match="disk is full"):
            cache.commit()

        with pytest.raises(OutputError, match="disk is full"):  # nor are results written after it
            cache.after_commit(lambda: None)
        assert cache.get("a") == {"text": "1"}  # still answered from memory in this run

    asyncio.run(in_loop())
    cache.close()
    reopened = CallCache(tmp_path / "c.sqlite")
    assert len(reopened) == 0  # nothing half-committed
    reopened.close()


def test_any_insert_error_rolls_back_and_stops_later_writes(tmp_path):
    """Not only a full disk: whatever the writer thread's insert raises, the batch is rolled back,
    no result written after it runs, and every later put or commit raises one OutputError line."""
    from nemotron.sdg.store import OutputError

    cache = CallCache(tmp_path / "c.sqlite")

    class Corrupt:
        def __init__(self, db):
            self.db = db

        def executemany(self, sql, *args):
            raise sqlite3.DatabaseError("database disk image is malformed")

        def __getattr__(self, name):
            return getattr(self.db, name)

    cache._db = Corrupt(cache._db)
    written = []

    async def in_loop():
        cache.put("a", {"text": "1"})
        future = cache.after_commit(lambda: written.append(1))
        with pytest.raises(OutputError, match="malformed") as info:
            await asyncio.wrap_future(future)
        assert isinstance(info.value.__cause__, sqlite3.DatabaseError)  # the cause is kept
        with pytest.raises(OutputError, match="malformed"):
            cache.put("b", {"text": "2"})
        with pytest.raises(OutputError, match="malformed"):
            cache.commit()

    asyncio.run(in_loop())
    assert written == [] and not cache._db.in_transaction  # rolled back, the write never ran
    cache.close()
    reopened = CallCache(tmp_path / "c.sqlite")
    assert len(reopened) == 0
    reopened.close()


def test_commit_ignores_a_failed_write_and_close_always_closes(tmp_path):
    """A result write's own error is its future's, not commit()'s: commit and close still finish,
    and close shuts the writer thread and both connections down."""
    cache = CallCache(tmp_path / "c.sqlite")

    def write():
        raise ValueError("the result file's own problem")

    async def in_loop():
        cache.put("a", {"text": "1"})
        future = cache.after_commit(write)
        cache.commit()  # does not raise the write's error
        with pytest.raises(ValueError):
            await asyncio.wrap_future(future)

    asyncio.run(in_loop())
    assert cache._writer.submit(write).exception() is not None  # still running before close
    cache.close()
    with pytest.raises(RuntimeError):  # shut down
        cache._writer.submit(lambda: None)
    with pytest.raises(sqlite3.ProgrammingError):  # closed
        cache._reader.execute("SELECT 1")
    reopened = CallCache(tmp_path / "c.sqlite")
    assert len(reopened) == 1
    reopened.close()


def test_a_write_after_commit_sees_every_answer_put_before_it(tmp_path):
    """What keeps a killed run lossless: results go to disk on the cache's writer thread only after
    the answers they used are committed, and reads never wait for that thread."""
    path = tmp_path / "c.sqlite"
    cache = CallCache(path)
    committed = lambda: sqlite3.connect(path).execute("SELECT COUNT(*) FROM calls").fetchone()[0]  # noqa: E731

    async def in_loop():
        seen = []
        for batch in range(3):
            for i in range(50):
                cache.put(f"{batch}.{i}", {"text": str(i)})
            assert cache.get(f"{batch}.49") == {"text": "49"}  # answered from memory before its commit
            seen.append(await asyncio.wrap_future(cache.after_commit(committed)))
        return seen

    assert asyncio.run(in_loop()) == [50, 100, 150]
    cache.close()
    reopened = CallCache(path)
    assert len(reopened) == 150
    reopened.close()
