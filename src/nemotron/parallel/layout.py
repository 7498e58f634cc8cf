"""Who holds what: the tensor x pipeline grid of ranks, and the slice of the model each rank owns.

Ranks are numbered stage-major: global rank = stage * tp + tp_rank, so a stage's tensor-parallel
group is a block of consecutive ranks (one node, NVLink) and pipeline neighbours are `tp` apart.
Every split here is contiguous, the way Megatron-LM cuts the same tensors, so a checkpoint saved
with the same TP/PP maps one-to-one onto the ranks.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import torch.distributed as dist

from nemotron.errors import ConfigError
from nemotron.model.config import ModelConfig


@dataclass(slots=True, frozen=True)
class ParallelLayout:
    tp: int = 1
    pp: int = 1
    rank: int = 0  # global rank
    tp_group: dist.ProcessGroup | None = None  # this stage's tensor-parallel ranks (None: tp == 1)
    pp_group: dist.ProcessGroup | None = None  # ranks with this tp_rank in every stage (None: pp == 1)

    def __post_init__(self) -> None:
        for name in ("tp", "pp"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"parallel layout field {name} must be a positive integer, got {value!r}")
        if not 0 <= self.rank < self.world_size:
            raise ConfigError(f"rank {self.rank} is outside a world of tp {self.tp} x pp {self.pp} ranks")

    @property
    def world_size(self) -> int:
        return self.tp * self.pp

    @property
    def tp_rank(self) -> int:
        return self.rank % self.tp

    @property
    def stage(self) -> int:
        """This rank's pipeline stage (its pp rank)."""
        return self.rank // self.tp

    @property
    def is_first_stage(self) -> bool:
        return self.stage == 0

    @property
    def is_last_stage(self) -> bool:
        return self.stage == self.pp - 1

    def global_rank(self, stage: int, tp_rank: int) -> int:
        return stage * self.tp + tp_rank

    @property
    def prev_rank(self) -> int | None:
        """Same tp_rank in the previous stage: where this rank's input activations come from."""
        return None if self.is_first_stage else self.rank - self.tp

    @property
    def next_rank(self) -> int | None:
        return None if self.is_last_stage else self.rank + self.tp

    @property
    def last_stage_rank0(self) -> int:
        """The rank that sends the last stage's results (logits, reward scores) to rank 0."""
        return self.global_rank(self.pp - 1, 0)

    @classmethod
    def from_world(cls, tp: int, pp: int = 1, timeout: timedelta | None = None) -> ParallelLayout:
        """The layout of this process in an initialised default process group of tp * pp ranks;
        `timeout` bounds the groups' collectives (torch's default for new groups otherwise).

        Collective: every rank must call it (in the same order as any other new_group calls)."""
        if not dist.is_initialized():
            if tp * pp == 1:
                return cls()
            raise ConfigError("tensor/pipeline parallelism needs torch.distributed initialised first "
                              "(torch.distributed.init_process_group)")
        world, rank = dist.get_world_size(), dist.get_rank()
        if world != tp * pp:
            raise ConfigError(f"tp {tp} x pp {pp} needs {tp * pp} processes, the process group has {world}")
        tp_group = pp_group = None
        for stage in range(pp):  # new_group is collective over the whole world: create every group
            ranks = [stage * tp + t for t in range(tp)]
            group = dist.new_group(ranks, timeout=timeout) if tp > 1 else None
            if rank in ranks:
                tp_group = group
        for t in range(tp):
            ranks = [stage * tp + t for stage in range(pp)]
            group = dist.new_group(ranks, timeout=timeout) if pp > 1 else None
            if rank in ranks:
                pp_group = group
        return cls(tp, pp, rank, tp_group, pp_group)

    # ---- the slice of the model this rank owns --------------------------------------------
    def check(self, config: ModelConfig) -> None:
        """Refuse layouts the model cannot be cut into, naming the fields."""
        tp, heads, kv = self.tp, config.num_heads, config.num_kv_heads
        if heads % tp:
            raise ConfigError(f"tensor parallel size {tp} must divide the number of attention heads ({heads})")
        if kv % tp and tp % kv:
            raise ConfigError(f"tensor parallel size {tp} must divide the number of KV heads ({kv}) or be a "
                              f"multiple of it (KV heads are then replicated)")
        if config.intermediate_size % tp:
            raise ConfigError(f"tensor parallel size {tp} must divide the FFN size ({config.intermediate_size})")
        if self.pp > config.num_layers:
            raise ConfigError(f"pipeline parallel size {self.pp} exceeds the number of layers ({config.num_layers})")

    def query_heads(self, config: ModelConfig) -> range:
        per_rank = config.num_heads // self.tp
        return range(self.tp_rank * per_rank, (self.tp_rank + 1) * per_rank)

    def kv_heads(self, config: ModelConfig) -> range:
        """KV heads of this rank; with more ranks than KV heads, each holds (a replica of) one."""
        kv = config.num_kv_heads
        if self.tp <= kv:
            per_rank = kv // self.tp
            return range(self.tp_rank * per_rank, (self.tp_rank + 1) * per_rank)
        first = self.tp_rank // (self.tp // kv)
        return range(first, first + 1)

    def vocab_rows(self, vocab_size: int) -> tuple[int, int, int]:
        """(start, stop, padded rows per rank) of this rank's vocabulary partition; the last rank's
        partition is short when tp does not divide the vocabulary."""
        per_rank = -(-vocab_size // self.tp)
        start = min(self.tp_rank * per_rank, vocab_size)
        return start, min(start + per_rank, vocab_size), per_rank

    def ffn_rows(self, config: ModelConfig) -> range:
        per_rank = config.intermediate_size // self.tp
        return range(self.tp_rank * per_rank, (self.tp_rank + 1) * per_rank)

    def stage_layers(self, num_layers: int, stage: int | None = None) -> range:
        """Global indices of a stage's layers (this rank's by default); earlier stages take the
        remainder when pp does not divide the layer count."""
        stage = self.stage if stage is None else stage
        base, extra = divmod(num_layers, self.pp)
        start = stage * base + min(stage, extra)
        return range(start, start + base + (stage < extra))

    def local_config(self, config: ModelConfig) -> ModelConfig:
        """The config as this rank's KV pool sees it: its stage's layers, its heads (size the paged
        KV cache with this). The stage's attention modules number their layers 0..n-1 to match."""
        self.check(config)
        return config.replace(num_layers=len(self.stage_layers(config.num_layers)),
                              num_heads=len(self.query_heads(config)),
                              num_kv_heads=len(self.kv_heads(config)))
