"""Exact and near-duplicate removal for generated records, one record at a time.

Exact: a hash of the text after normalisation (case, whitespace, punctuation). Near: MinHash over
word shingles with LSH banding; a candidate from a shared band is a duplicate when its estimated
Jaccard similarity reaches the threshold. Every removal names the kept record that caused it. State
saves to one .npz file so a resumed pipeline keeps deduplicating against what it already kept.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

RecordId = str | int

_PRIME = (1 << 31) - 1  # Mersenne prime: a * x + b stays below 2**62, so uint64 never overflows
_EMPTY = np.uint32(_PRIME)  # slot value of a text with no shingles (larger than any real hash)


@dataclass(frozen=True, slots=True)
class DedupConfig:
    num_perm: int = 128
    # LSH only proposes candidates; the threshold decides. 32 bands of 4 rows put the banding
    # S-curve's midpoint ((1/32)**(1/4) ~ 0.42) well below the threshold, so a pair at
    # Jaccard 0.7 becomes a candidate with probability 1 - (1 - 0.7**4)**32 > 0.9998.
    bands: int = 32
    threshold: float = 0.7  # estimated Jaccard similarity at or above which a text is a near dup
    shingle_size: int = 3  # words per shingle
    seed: int = 0
    exact: bool = True
    near: bool = True

    def __post_init__(self) -> None:
        if self.num_perm < 1 or self.bands < 1 or self.num_perm % self.bands:
            raise ValueError(f"num_perm ({self.num_perm}) must be a positive multiple of bands ({self.bands})")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if self.shingle_size < 1:
            raise ValueError(f"shingle_size must be >= 1, got {self.shingle_size}")

    @property
    def rows(self) -> int:
        return self.num_perm // self.bands


@dataclass(frozen=True, slots=True)
class DedupDecision:
    kept: bool
    reason: str | None = None  # "exact" | "near" | None when kept
    duplicate_of: RecordId | None = None
    similarity: float | None = None  # 1.0 for exact; estimated Jaccard for near


def normalize_text(text: str) -> str:
    """NFKC, case-folded, punctuation dropped, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(re.sub(r"[^\w\s]|_", " ", text).split())


def shingles(text: str, size: int) -> set[str]:
    """Word n-grams of the normalised text; a text shorter than `size` words is one shingle."""
    return _shingles(normalize_text(text).split(), size)


def _shingles(tokens: list[str], size: int) -> set[str]:
    if len(tokens) <= size:
        return {" ".join(tokens)} if tokens else set()
    return {" ".join(tokens[i:i + size]) for i in range(len(tokens) - size + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


class MinHasher:
    """num_perm universal hash functions h(x) = (a x + b) mod p over 31-bit shingle hashes; the
    signature keeps each function's minimum. Same seed, same signatures, in any process."""

    def __init__(self, num_perm: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, _PRIME, size=num_perm, dtype=np.uint64)
        self.b = rng.integers(0, _PRIME, size=num_perm, dtype=np.uint64)

    def signature(self, shingle_set: set[str]) -> np.ndarray:
        if not shingle_set:
            return np.full(self.a.shape, _EMPTY, dtype=np.uint32)
        # blake2b, not hash(): Python's str hash is salted per process and would break resumes.
        digests = b"".join([hashlib.blake2b(s.encode(), digest_size=8).digest() for s in shingle_set])
        x = np.frombuffer(digests, dtype="<u8") % np.uint64(_PRIME)  # each digest as a little-endian integer
        hashed = (x[:, None] * self.a[None, :] + self.b[None, :]) % _PRIME  # (S, num_perm)
        return hashed.min(axis=0).astype(np.uint32)


def estimate_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    return float(np.mean(sig_a == sig_b))


class Deduplicator:
    """Streaming dedup: `add` decides for one record and, when it is kept, indexes it."""

    def __init__(self, config: DedupConfig | None = None) -> None:
        self.config = config or DedupConfig()
        self._hasher = MinHasher(self.config.num_perm, self.config.seed)
        self._exact: dict[str, RecordId] = {}
        self._ids: list[RecordId] = []  # kept records with a signature, row i of _sigs
        # Rows 0 .. len(_ids) - 1 are used; capacity doubles, so indexing a record is O(1) amortized
        # (stacking all signatures again at each lookup made a stage's dedup quadratic).
        self._sigs = np.empty((64, self.config.num_perm), dtype=np.uint32)
        self._buckets: list[dict[bytes, int | list[int]]] = [{} for _ in range(self.config.bands)]  # per band
        self.kept = 0

    def __len__(self) -> int:
        """Number of records kept so far."""
        return self.kept

    def add(self, record_id: RecordId, text: str) -> DedupDecision:
        cfg = self.config
        normal = normalize_text(text)
        digest = hashlib.blake2b(normal.encode(), digest_size=16).hexdigest()
        if cfg.exact and digest in self._exact:
            return DedupDecision(False, "exact", self._exact[digest], 1.0)
        sig = self._hasher.signature(_shingles(normal.split(), cfg.shingle_size)) if cfg.near else None
        if sig is not None:
            keys = self._band_keys(sig)
            match = self._best_candidate(sig, keys)
            if match is not None:
                return DedupDecision(False, "near", self._ids[match[0]], match[1])
        if cfg.exact:
            self._exact[digest] = record_id
        if sig is not None:
            self._index(record_id, sig, keys)
        self.kept += 1
        return DedupDecision(True)

    def _band_keys(self, sig: np.ndarray) -> list[bytes]:
        """Each band's rows as bytes (slicing bytes is far cheaper than slicing the array per band)."""
        raw, width = sig.tobytes(), self.config.rows * sig.itemsize
        return [raw[start:start + width] for start in range(0, len(raw), width)]

    def _best_candidate(self, sig: np.ndarray, keys: list[bytes]) -> tuple[int, float] | None:
        found: set[int] = set()
        for bucket, key in zip(self._buckets, keys):
            rows = bucket.get(key)
            if rows is not None:
                found.update(rows) if isinstance(rows, list) else found.add(rows)
        if not found:
            return None
        rows = sorted(found)
        sims = np.count_nonzero(self._sigs[rows] == sig[None, :], axis=1) / sig.shape[0]  # (len(rows),)
        best = int(np.argmax(sims))  # ties go to the earliest kept record
        if sims[best] < self.config.threshold:
            return None
        return rows[best], float(sims[best])

    def _index(self, record_id: RecordId, sig: np.ndarray, keys: list[bytes] | None = None) -> None:
        row = len(self._ids)
        if row == len(self._sigs):
            self._sigs = np.concatenate([self._sigs, np.empty_like(self._sigs)])
        self._sigs[row] = sig
        self._ids.append(record_id)
        for bucket, key in zip(self._buckets, keys or self._band_keys(sig)):
            rows = bucket.get(key)  # one row as an int, a list only once a band is shared (most are not)
            if rows is None:
                bucket[key] = row
            elif isinstance(rows, list):
                rows.append(row)
            else:
                bucket[key] = [rows, row]

    def _signatures(self) -> np.ndarray:
        return self._sigs[:len(self._ids)]

    # ---- persistence ----

    def save(self, path: str | Path) -> None:
        """Write the whole state to one .npz, atomically (a kill mid-save leaves the old file)."""
        path = Path(path)
        meta = {"config": asdict(self.config), "kept": self.kept, "ids": self._ids, "exact": self._exact}
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            np.savez(f, signatures=self._signatures(), meta=np.array(json.dumps(meta)))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> Deduplicator:
        with np.load(Path(path), allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            sigs = data["signatures"].astype(np.uint32)
        dedup = cls(DedupConfig(**meta["config"]))
        dedup._exact = dict(meta["exact"])
        dedup.kept = meta["kept"]
        for record_id, sig in zip(meta["ids"], sigs):
            dedup._index(record_id, sig)
        return dedup
