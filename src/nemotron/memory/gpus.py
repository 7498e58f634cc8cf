"""Common GPUs and their memory, for "which hardware does this model need?".

Capacities are the nominal figures vendors sell the cards by, in GB (10⁹ bytes). Devices report a
little more (an "80 GB" H100 shows 81,559 MiB ≈ 85.5 GB); the planner leaves that difference as
margin instead of counting on it. FP8 matmuls need compute capability 8.9+ (Ada, Hopper,
Blackwell); bfloat16 needs 8.0+ (Ampere and later).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True, frozen=True)
class GPU:
    name: str
    memory_gb: float
    fp8: bool  # FP8 tensor cores
    bf16: bool
    datacenter: bool  # sold in 8-GPU nodes (NVLink); workstation cards go up to 8 per machine

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gb * 1e9)


CATALOG: tuple[GPU, ...] = (
    GPU("B200", 180, fp8=True, bf16=True, datacenter=True),  # DGX B200: 1,440 GB over 8 GPUs
    GPU("H200", 141, fp8=True, bf16=True, datacenter=True),
    GPU("H100 NVL", 94, fp8=True, bf16=True, datacenter=True),
    GPU("H20", 96, fp8=True, bf16=True, datacenter=True),
    GPU("H100 80GB", 80, fp8=True, bf16=True, datacenter=True),
    GPU("A100 80GB", 80, fp8=False, bf16=True, datacenter=True),
    GPU("A100 40GB", 40, fp8=False, bf16=True, datacenter=True),
    GPU("L40S", 48, fp8=True, bf16=True, datacenter=True),
    GPU("L4", 24, fp8=True, bf16=True, datacenter=True),
    GPU("A10G", 24, fp8=False, bf16=True, datacenter=True),
    GPU("V100 32GB", 32, fp8=False, bf16=False, datacenter=True),
    GPU("T4", 16, fp8=False, bf16=False, datacenter=True),
    GPU("RTX 6000 Ada", 48, fp8=True, bf16=True, datacenter=False),
    GPU("RTX A6000", 48, fp8=False, bf16=True, datacenter=False),
    GPU("RTX 5090", 32, fp8=True, bf16=True, datacenter=False),
    GPU("RTX 4090", 24, fp8=True, bf16=True, datacenter=False),
    GPU("RTX 3090", 24, fp8=False, bf16=True, datacenter=False),
    GPU("RTX 4080", 16, fp8=True, bf16=True, datacenter=False),
    GPU("RTX 4060 Ti 16GB", 16, fp8=True, bf16=True, datacenter=False),
    GPU("RTX 3060 12GB", 12, fp8=False, bf16=True, datacenter=False),
)

GPUS_PER_NODE = 8
MAX_NODES = 8  # the search for a fitting setup stops at 64 datacenter GPUs

