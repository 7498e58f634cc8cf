"""Choice seeds."""
from __future__ import annotations

from nemotron.server.completion import derive_seed


def test_derived_seeds_are_reproducible_and_distinct():
    assert derive_seed(None, 3) is None and derive_seed(7, 0) == 7
    seeds = [derive_seed(7, i) for i in range(100)]
    assert len(set(seeds)) == 100 and seeds == [derive_seed(7, i) for i in range(100)]
    assert all(0 <= s < 2**64 for s in seeds)
