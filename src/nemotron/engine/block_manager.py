"""KV-cache blocks: allocation, reference counts, and prefix sharing.

A full block is identified by the hash of its tokens chained with the hash of the block before it,
so equal hashes mean equal prefixes. Blocks of a shared prefix are computed once and referenced by
every sequence that starts with it. A block whose last reference goes away keeps its contents and
stays findable until it is reused: free blocks are handed out least-recently-freed first (LRU).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

_NO_HASH = -1


def block_hash(tokens: tuple[int, ...], previous: int) -> int:
    return hash((previous, tokens))


@dataclass(slots=True)
class Block:
    block_id: int
    ref_count: int = 0
    hash: int = _NO_HASH
    tokens: tuple[int, ...] = field(default_factory=tuple)


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        if num_blocks <= 0 or block_size <= 0:
            raise ValueError(f"need num_blocks > 0 and block_size > 0, got {num_blocks}, {block_size}")
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self._free: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))  # LRU order
        self._by_hash: dict[int, int] = {}
        self.prefix_hits = 0  # tokens served from the cache, for metrics and tests
        self.prefix_queries = 0

    # ---- accounting --------------------------------------------------------------------------
    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    # ---- prefix lookup -----------------------------------------------------------------------
    def cached_prefix(self, token_ids: list[int]) -> list[int]:
        """Ids of cached blocks matching the longest full-block prefix of token_ids.

        At least one token is always left to compute, since the model must produce its logits.
        """
        if not self.enable_prefix_caching:
            return []
        found: list[int] = []
        previous = _NO_HASH
        full_blocks = (len(token_ids) - 1) // self.block_size
        for i in range(full_blocks):
            tokens = tuple(token_ids[i * self.block_size:(i + 1) * self.block_size])
            previous = block_hash(tokens, previous)
            block_id = self._by_hash.get(previous)
            if block_id is None or self.blocks[block_id].tokens != tokens:
                break
            found.append(block_id)
        return found

    # ---- allocation --------------------------------------------------------------------------
    def can_allocate(self, num_blocks: int, reused: list[int] | None = None) -> bool:
        """Enough blocks for num_blocks new ones, counting that reused free blocks leave the free list."""
        revived = sum(1 for b in reused or () if self.blocks[b].ref_count == 0)
        return self.num_free_blocks - revived >= num_blocks

    def share(self, block_ids: list[int]) -> None:
        """Take a reference on cached blocks (a prefix hit)."""
        for block_id in block_ids:
            block = self.blocks[block_id]
            if block.ref_count == 0:
                del self._free[block_id]
            block.ref_count += 1

    def allocate(self) -> int:
        """A fresh block; evicts the least recently freed cached block if needed."""
        if not self._free:
            raise RuntimeError("KV cache is out of blocks; the scheduler must check can_allocate first")
        block_id, _ = self._free.popitem(last=False)
        block = self.blocks[block_id]
        if block.hash != _NO_HASH and self._by_hash.get(block.hash) == block_id:
            del self._by_hash[block.hash]
        block.hash, block.tokens, block.ref_count = _NO_HASH, (), 1
        return block_id

    def free(self, block_ids: list[int]) -> None:
        # Freed in reverse so a sequence's tail blocks are evicted before its (more shareable) head.
        for block_id in reversed(block_ids):
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count < 0:
                raise RuntimeError(f"block {block_id} freed more often than it was taken")
            if block.ref_count == 0:
                self._free[block_id] = None

    def register_full_block(self, block_id: int, tokens: tuple[int, ...], previous_hash: int) -> int:
        """Record a block that has just been filled so later sequences can share it; returns its hash."""
        block = self.blocks[block_id]
        block.hash = block_hash(tokens, previous_hash)
        block.tokens = tokens
        if self.enable_prefix_caching:
            self._by_hash.setdefault(block.hash, block_id)
        return block.hash

    def hash_of(self, block_id: int) -> int:
        return self.blocks[block_id].hash

    def record_lookup(self, queried_tokens: int, hit_tokens: int) -> None:
        self.prefix_queries += queried_tokens
        self.prefix_hits += hit_tokens
