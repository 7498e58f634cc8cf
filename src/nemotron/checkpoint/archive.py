"""A `.nemo` tar archive read in place: members are read straight from the archive, never unpacked.

An archive's headers can claim anything, so its member index is checked before any data is read:
regular files and directories only (no symlinks, hard links, devices or sparse files), names inside
the archive (no absolute paths, no `..`), no name used twice or as both a file and a directory,
member sizes within `ArchiveLimits` and, in an uncompressed archive, within the archive's own bytes.
`ArchivePath` offers the few `pathlib.Path` methods the NeMo readers use, so they read a directory
and an archive alike.
"""
from __future__ import annotations

import bz2
import fnmatch
import gzip
import io
import lzma
import os
import tarfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from nemotron.errors import CheckpointError

# What a broken (truncated, corrupt) archive raises while its headers or data are read.
_READ_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError)
_EXTENDED_HEADERS = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME,
                     tarfile.GNUTYPE_LONGLINK)
MAX_EXTENDED_HEADER_BYTES = 1 << 20  # pax records and GNU long names: a few hundred bytes in practice


class _HeaderTooLarge(Exception):
    """Not a TarError, so tarfile does not turn it into 'end of archive' or a retry."""


class _BoundedTarInfo(tarfile.TarInfo):
    """tarfile reads a pax or long-name header whole into memory before it yields the member it
    describes, so a gzip archive of a few MB could make it read gigabytes: bound them first."""

    def _proc_member(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in _EXTENDED_HEADERS and self.size > MAX_EXTENDED_HEADER_BYTES:
            raise _HeaderTooLarge(f"has an extended (pax or long-name) header of {self.size:,} bytes")
        return super()._proc_member(tar)


@dataclass(slots=True, frozen=True)
class ArchiveLimits:
    """Bounds on what an archive may declare. Members are never written to disk; these bound the
    memory and time a hostile archive can cost."""
    max_member_bytes: int = 1 << 40  # 1 TiB: a single-file Nemotron-4 340B in bf16 is 0.68 TB
    max_total_bytes: int = 4 << 40
    max_members: int = 1_000_000
    max_compression_ratio: float = 20.0  # compressed archives: declared bytes per archive byte
    max_text_bytes: int = 256 << 20  # text members parsed whole (YAML, JSON)

    def __post_init__(self) -> None:
        for name in ("max_member_bytes", "max_total_bytes", "max_members", "max_compression_ratio",
                     "max_text_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ArchiveLimits.{name} must be positive")


class Archive:
    """An open tar archive with a checked member index; use as a context manager."""

    def __init__(self, path: Path, limits: ArchiveLimits | None = None) -> None:
        self.path, self.limits = Path(path), limits or ArchiveLimits()
        try:
            self._tar = tarfile.open(self.path, "r:*", tarinfo=_BoundedTarInfo)
        except _HeaderTooLarge as err:
            raise self._refuse(str(err)) from None
        except tarfile.ReadError:
            raise CheckpointError(f"{self.path} is not a .nemo archive (not a tar file)") from None
        except (EOFError, OSError, zlib.error, lzma.LZMAError) as err:
            raise CheckpointError(f"{self.path} is not a readable .nemo archive: {err}") from None
        self.compressed = isinstance(self._tar.fileobj, (gzip.GzipFile, bz2.BZ2File, lzma.LZMAFile))
        try:
            self._files, self._dirs = self._index()
        except BaseException:
            self._tar.close()
            raise

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self._tar.close()

    @property
    def root(self) -> ArchivePath:
        return ArchivePath(self, ())

    def _index(self) -> tuple[dict[tuple[str, ...], tarfile.TarInfo], set[tuple[str, ...]]]:
        files: dict[tuple[str, ...], tarfile.TarInfo] = {}
        dirs: set[tuple[str, ...]] = {()}
        total, archive_bytes = 0, self.path.stat().st_size
        budget = (min(self.limits.max_total_bytes, int(archive_bytes * self.limits.max_compression_ratio))
                  if self.compressed else self.limits.max_total_bytes)
        try:
            for count, member in enumerate(self._tar, 1):
                if count > self.limits.max_members:
                    raise self._refuse(f"has more than {self.limits.max_members:,} members")
                parts = self._parts(member)
                if member.isdir():
                    if parts in files:
                        raise self._refuse(f"holds both a file and a directory named {member.name!r}")
                    dirs.add(parts)
                    continue
                self._check_file(member, archive_bytes)
                if parts in files or parts in dirs:
                    raise self._refuse(f"holds {member.name!r} twice (or as both a file and a directory)")
                total += member.size
                if total > budget:
                    raise self._refuse(f"declares {total:,} bytes of members, more than the limit of "
                                       f"{budget:,} bytes" + (" for a compressed archive of this size"
                                                              if self.compressed else ""))
                files[parts] = member
        except _HeaderTooLarge as err:
            raise self._refuse(str(err)) from None
        except _READ_ERRORS as err:
            raise CheckpointError(f"{self.path} is truncated or corrupt ({type(err).__name__}: {err})") from None
        for parts in files:  # a file cannot also be the parent of another member
            for depth in range(1, len(parts)):
                if parts[:depth] in files:
                    raise self._refuse(f"holds both a file and a directory named {'/'.join(parts[:depth])!r}")
                dirs.add(parts[:depth])
        return files, dirs

    def _parts(self, member: tarfile.TarInfo) -> tuple[str, ...]:
        name = member.name
        parts = tuple(p for p in PurePosixPath(name).parts if p != ".")
        if (not parts and not member.isdir()) or name.startswith("/") or ".." in parts or "\x00" in name:
            raise self._refuse(f"has an unsafe member name {name!r}")
        return parts

    def _check_file(self, member: tarfile.TarInfo, archive_bytes: int) -> None:
        if member.issym() or member.islnk():
            raise self._refuse(f"holds a link {member.name!r} -> {member.linkname!r}; members must be regular files")
        if not member.isreg():
            raise self._refuse(f"holds {member.name!r}, which is not a regular file (device, FIFO or unknown type)")
        if member.issparse():
            raise self._refuse(f"holds a sparse member {member.name!r} (declared {member.size:,} bytes)")
        if member.size > self.limits.max_member_bytes:
            raise self._refuse(f"member {member.name!r} declares {member.size:,} bytes, more than the limit of "
                               f"{self.limits.max_member_bytes:,}")
        if not self.compressed and member.offset_data + member.size > archive_bytes:
            raise CheckpointError(f"{self.path} is truncated: member {member.name!r} needs "
                                  f"{member.size:,} bytes, the archive ends before them")

    def _refuse(self, what: str) -> CheckpointError:
        return CheckpointError(f"{self.path} {what}; refusing to read it")

    # ---- member access, for ArchivePath --------------------------------------------------------
    def open_member(self, parts: tuple[str, ...]) -> IO[bytes]:
        member = self._files[parts]
        try:
            if self.compressed:  # a compressed stream seeks by decompressing again: read it once
                return io.BytesIO(self._read(member))
            return self._tar.extractfile(member)
        except _READ_ERRORS as err:
            raise CheckpointError(f"{self.path} is truncated or corrupt at {member.name!r}: {err}") from None

    def read_member(self, parts: tuple[str, ...], limit: int | None = None) -> bytes:
        member = self._files[parts]
        if limit is not None and member.size > limit:
            raise self._refuse(f"member {member.name!r} is {member.size:,} bytes, more than {limit:,} "
                               f"for a text file parsed whole")
        try:
            return self._read(member)
        except _READ_ERRORS as err:
            raise CheckpointError(f"{self.path} is truncated or corrupt at {member.name!r}: {err}") from None

    def extract_to(self, dest: Path) -> None:
        """Write the checked regular files under `dest` (for readers that need real files to memory-map)."""
        import shutil

        for parts, member in self._files.items():
            target = dest.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with self._tar.extractfile(member) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 16 << 20)
            except _READ_ERRORS as err:
                if isinstance(err, OSError) and err.filename == str(target):
                    raise CheckpointError(f"cannot unpack {member.name!r} to {target}: {err.strerror}") from None
                raise CheckpointError(f"{self.path} is truncated or corrupt at {member.name!r}: {err}") from None

    def _read(self, member: tarfile.TarInfo) -> bytes:
        with self._tar.extractfile(member) as handle:
            data = handle.read()
        if len(data) != member.size:
            raise CheckpointError(f"{self.path} is truncated: member {member.name!r} has {len(data):,} "
                                  f"of its {member.size:,} bytes")
        return data


class ArchivePath:
    """A path inside an `Archive`, with the subset of `pathlib.Path` the NeMo readers need."""

    __slots__ = ("archive", "parts")

    def __init__(self, archive: Archive, parts: tuple[str, ...]) -> None:
        self.archive, self.parts = archive, parts

    def __truediv__(self, other: str) -> ArchivePath:
        parts = tuple(p for p in PurePosixPath(other).parts if p != ".")
        return ArchivePath(self.archive, self.parts + parts)

    def __str__(self) -> str:
        return "/".join((str(self.archive.path), *self.parts))

    def __repr__(self) -> str:
        return f"ArchivePath({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ArchivePath) and (self.archive, self.parts) == (other.archive, other.parts)

    def __hash__(self) -> int:
        return hash(self.parts)

    def __lt__(self, other: ArchivePath) -> bool:
        return self.parts < other.parts

    @property
    def name(self) -> str:
        return self.parts[-1] if self.parts else ""

    def is_file(self) -> bool:
        return self.parts in self.archive._files

    def is_dir(self) -> bool:
        return self.parts in self.archive._dirs

    def exists(self) -> bool:
        return self.is_file() or self.is_dir()

    def iterdir(self) -> Iterator[ArchivePath]:
        depth = len(self.parts) + 1
        children = {p[:depth] for p in (*self.archive._files, *self.archive._dirs)
                    if len(p) >= depth and p[:depth - 1] == self.parts}
        return (ArchivePath(self.archive, p) for p in sorted(children))

    def glob(self, pattern: str) -> Iterator[ArchivePath]:
        """Children whose name matches `pattern` (one level, like Path.glob without separators)."""
        return (child for child in self.iterdir() if fnmatch.fnmatchcase(child.name, pattern))

    def relative_to(self, other: ArchivePath) -> PurePosixPath:
        if self.parts[: len(other.parts)] != other.parts:
            raise ValueError(f"{self} is not inside {other}")
        return PurePosixPath(*self.parts[len(other.parts):])

    def open(self, mode: str = "rb") -> IO[bytes]:
        if mode != "rb":
            raise ValueError("archive members open read-only in binary mode")
        self._require_file()
        return self.archive.open_member(self.parts)

    def read_bytes(self) -> bytes:
        self._require_file()
        return self.archive.read_member(self.parts)

    def read_text(self, encoding: str = "utf-8") -> str:
        """Text files (YAML, JSON) are parsed whole in memory: their size is bounded by max_text_bytes."""
        self._require_file()
        try:
            return self.archive.read_member(self.parts, self.archive.limits.max_text_bytes).decode(encoding)
        except UnicodeDecodeError as err:
            raise CheckpointError(f"{self} is not {encoding} text: {err}") from None

    def _require_file(self) -> None:
        if not self.is_file():
            raise CheckpointError(f"{self} is not a file in the archive")


class ArchiveFileSystem:
    """What torch.distributed.checkpoint's FileSystemReader needs of a file system, over an archive."""

    def concat_path(self, path: ArchivePath, suffix: str) -> ArchivePath:
        return path / suffix

    @contextmanager
    def create_stream(self, path: ArchivePath, mode: str) -> Iterator[IO[bytes]]:
        with path.open(mode) as stream:
            yield stream


def is_tar(path: str | os.PathLike) -> bool:
    """Whether a file is a tar archive (plain or compressed), without tarfile.is_tarfile's unbounded read
    of a first pax header; an oversized one counts as a tar, refused when the archive is opened."""
    try:
        with tarfile.open(path, "r:*", tarinfo=_BoundedTarInfo):
            return True
    except (_HeaderTooLarge, EOFError, zlib.error, lzma.LZMAError):  # a tar, but broken: Archive says how
        return True
    except tarfile.TarError:
        return False


def open_archive(path: str | os.PathLike, limits: ArchiveLimits | None = None) -> Archive:
    return Archive(Path(path), limits)
