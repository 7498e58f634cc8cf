"""Exact and MinHash near-duplicate removal: decisions with their pairs, estimate quality,
determinism, and save/load resuming to the same decisions."""
from __future__ import annotations

import random

import numpy as np
import pytest

from nemotron.sdg.dedup import (
    DedupConfig,
    DedupDecision,
    Deduplicator,
    MinHasher,
    estimate_jaccard,
    jaccard,
    normalize_text,
    shingles,
)

VOCAB = [f"w{i}" for i in range(3000)]


def _text(rng: random.Random, n: int = 60) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(n))


def _change_words(rng: random.Random, text: str, k: int) -> str:
    tokens = text.split()
    for i in rng.sample(range(len(tokens)), k):
        tokens[i] = rng.choice(VOCAB) + "x"
    return " ".join(tokens)


def test_normalize_text():
    assert normalize_text("  Hello,   WORLD!\n") == normalize_text("hello world") == "hello world"


def test_exact_duplicates_report_the_pair():
    d = Deduplicator()
    assert d.add("a", "The cat sat on the mat.") == DedupDecision(True)
    assert d.add("b", "the  CAT sat on the mat") == DedupDecision(False, "exact", "a", 1.0)
    assert d.add("c", "A completely different sentence about dogs.").kept
    assert len(d) == 2


def test_near_duplicates_removed_with_the_right_pair():
    rng = random.Random(0)
    originals = {f"doc{i}": _text(rng) for i in range(50)}
    d = Deduplicator(DedupConfig(threshold=0.5))
    for rid, text in originals.items():
        assert d.add(rid, text).kept, rid  # random distinct texts are all kept
    for rid, text in originals.items():
        variant = _change_words(rng, text, 2)  # 2 of 60 words changed
        decision = d.add(rid + "-v", variant)
        assert not decision.kept and decision.reason == "near"
        assert decision.duplicate_of == rid
        true = jaccard(shingles(text, 3), shingles(variant, 3))
        assert abs(decision.similarity - true) < 0.2
    assert len(d) == 50


def test_query_matches_the_close_record_not_the_far_one():
    rng = random.Random(4)
    base = _text(rng, 80)
    far = _change_words(random.Random(5), base, 10)  # Jaccard with base about 0.45
    close = _change_words(random.Random(6), base, 1)  # about 0.93
    d = Deduplicator(DedupConfig(threshold=0.6))
    assert d.add("far", far).kept and d.add("close", close).kept
    decision = d.add("query", base)
    assert (decision.reason, decision.duplicate_of) == ("near", "close")
    assert decision.similarity > 0.8


def test_distinct_texts_are_kept():
    rng = random.Random(7)
    d = Deduplicator()
    decisions = [d.add(i, _text(rng, 40)) for i in range(300)]
    assert all(x.kept for x in decisions)


def test_estimated_jaccard_close_to_true_value():
    rng = random.Random(8)
    hasher = MinHasher(num_perm=256, seed=0)
    errors = []
    for k in (0, 5, 15, 30, 60):
        a = _text(rng, 100)
        b = _change_words(rng, a, k)
        sa, sb = shingles(a, 3), shingles(b, 3)
        errors.append(abs(estimate_jaccard(hasher.signature(sa), hasher.signature(sb)) - jaccard(sa, sb)))
    # standard error of the estimate is sqrt(J(1-J)/256) <= 0.031
    assert max(errors) < 0.1
    assert np.mean(errors) < 0.05


def test_signatures_are_deterministic_and_seeded():
    text = "the quick brown fox jumps over the lazy dog"
    s = shingles(text, 3)
    assert np.array_equal(MinHasher(64, 3).signature(s), MinHasher(64, 3).signature(s))
    assert not np.array_equal(MinHasher(64, 3).signature(s), MinHasher(64, 4).signature(s))


def test_config_validation():
    with pytest.raises(ValueError, match="multiple of bands"):
        DedupConfig(num_perm=100, bands=16)
    with pytest.raises(ValueError, match="threshold"):
        DedupConfig(threshold=0.0)


def test_exact_only_and_near_only_modes():
    text = "one two three four five six seven eight nine ten"
    exact_only = Deduplicator(DedupConfig(near=False))
    exact_only.add(1, text)
    assert exact_only.add(2, text.replace("ten", "eleven")).kept
    near_only = Deduplicator(DedupConfig(exact=False, threshold=0.5))
    near_only.add(1, text)
    assert near_only.add(2, text).reason == "near"


def test_resume_from_saved_state_gives_the_same_decisions(tmp_path):
    rng = random.Random(9)
    texts = [_text(rng) for _ in range(40)]
    stream = [(i, t) for i, t in enumerate(texts)]
    stream += [(f"dup{i}", _change_words(rng, texts[i], 2)) for i in range(0, 40, 3)]
    stream += [(f"exact{i}", texts[i].upper()) for i in range(1, 40, 5)]
    rng.shuffle(stream[40:])

    uninterrupted = Deduplicator(DedupConfig(threshold=0.5))
    expected = [uninterrupted.add(rid, t) for rid, t in stream]

    first = Deduplicator(DedupConfig(threshold=0.5))
    got = [first.add(rid, t) for rid, t in stream[:45]]
    path = tmp_path / "dedup.npz"
    first.save(path)
    resumed = Deduplicator.load(path)
    assert resumed.config == first.config and len(resumed) == len(first)
    got += [resumed.add(rid, t) for rid, t in stream[45:]]
    assert got == expected
    assert any(d.reason == "near" for d in got) and any(d.reason == "exact" for d in got)
    assert not (tmp_path / "dedup.npz.tmp").exists()
