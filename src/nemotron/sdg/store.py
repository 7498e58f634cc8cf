"""Append-only JSONL files that survive SIGKILL at any moment.

A batch of records goes to disk as one `os.write` of whole lines, then fsync. A kill can at worst
leave a half-written last line, which `repair_tail` cuts off when the file is opened again. Every
record has an `id` derived from its content, and a store skips ids it already holds, so redoing
work after a crash appends nothing twice.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from nemotron.errors import NemotronError

DISK_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
               errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
               errno.EPERM: "permission denied"}


class OutputError(NemotronError):
    """The output directory cannot be written (full, read-only, no permission). Everything written
    before stays valid: free space or fix permissions and rerun the same command to resume."""


@contextmanager
def writing(path: str | Path):
    """Turn a disk error while writing `path` into an OutputError naming it."""
    try:
        yield
    except OSError as err:
        reason = DISK_ERRNOS.get(err.errno)
        if reason is None:
            raise
        raise OutputError(f"cannot write {path}: {reason} ({err.strerror}); nothing already written is lost, "
                          f"rerun the same command to resume once it is writable") from None


def content_id(*parts: object) -> str:
    """A 16-hex-digit id of JSON-serialisable parts (stable across processes and machines)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def dumps(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def repair_tail(path: str | Path) -> int:
    """Cut a trailing partial line (no final newline) left by a kill mid-write; bytes removed."""
    path = Path(path)
    if not path.exists():
        return 0
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        # Walk back in blocks to the last newline.
        end, block = size, 1 << 16
        while end > 0:
            start = max(0, end - block)
            f.seek(start)
            chunk = f.read(end - start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            end = start
        else:
            keep = 0
        if keep < size:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
        return size - keep


def read_jsonl(path: str | Path) -> Iterator[dict]:
    """Records of a JSONL file; a torn last line (no newline yet) is not returned."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.endswith(b"\n"):
                return
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{number}: not a JSON line ({err.msg})") from None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_atomic(path: str | Path, records: Iterable[dict]) -> int:
    """Replace `path` with these records in one step: readers (and a crash) see old or new, never
    a mix. Returns the number of records written."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(tmp, "wb") as f:
                for record in records:
                    f.write(dumps(record).encode() + b"\n")
                    count += 1
                f.flush()
                os.fsync(f.fileno())
        except OSError:
            tmp.unlink(missing_ok=True)  # the old file stays as it was
            raise
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    return count


def write_json(path: str | Path, data: object) -> None:
    """Replace a small JSON file in one step."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with writing(path):
        try:
            tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(path)


def append_line(path: str | Path, record: dict) -> None:
    """One JSON line appended to a log file (no fsync: a lost line is only a lost log entry)."""
    with writing(path), open(path, "a") as f:
        f.write(dumps(record) + "\n")


def make_dirs(root: Path, subdirs: Iterable[str]) -> None:
    """The run's folders, or an OutputError naming the one that cannot be made (a file in the way, a
    parent that does not exist or cannot hold folders, no permission)."""
    for sub in subdirs:
        with writing(root / sub):
            try:
                (root / sub).mkdir(parents=True, exist_ok=True)
            except (FileNotFoundError, NotADirectoryError, FileExistsError, PermissionError) as err:
                raise OutputError(f"cannot make the output folder {root / sub}: {err.strerror}") from None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class RecordStore:
    """One JSONL file of records keyed by `id`. Open repairs the tail and indexes existing ids."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with writing(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.repaired_bytes = repair_tail(self.path)
            self.ids: set[str] = {r["id"] for r in read_jsonl(self.path)}
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def __contains__(self, record_id: str) -> bool:
        return record_id in self.ids

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[dict]:
        return read_jsonl(self.path)

    def append(self, records: Iterable[dict]) -> int:
        """Write the records whose id is new, as one batch (write + fsync); returns how many."""
        lines: list[str] = []
        fresh: set[str] = set()
        for record in records:
            record_id = record["id"]
            if record_id in self.ids or record_id in fresh:
                continue
            fresh.add(record_id)
            lines.append(dumps(record))
        if not lines:
            return 0
        with writing(self.path):
            try:
                _write_all(self._fd, ("\n".join(lines) + "\n").encode())
                os.fsync(self._fd)
            except OSError:
                # A batch cut short (disk full) leaves a torn last line at most; cut it now while
                # we can, and the next open would anyway. None of the batch counts as written.
                repair_tail(self.path)
                raise
        self.ids.update(fresh)
        return len(lines)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> RecordStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
