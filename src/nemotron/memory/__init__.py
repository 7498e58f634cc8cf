"""How much memory a model needs, and which GPU setups hold it (`nemotron memory`).

Formula (planner.py):

    total = weights + KV cache + activations + prompt logprobs + runtime overhead
    weights      = Σ parameters × bits per weight / 8
    KV cache     = batch × context × 2 × layers × KV heads × head_dim × 2 bytes
    activations  = min(batch × context, 2048) × (2·hidden + 2·ffn) × 2 bytes + batch × vocab × 8 bytes
    prompt logprobs = 512 × vocab × 2 + 64 × vocab × 8 bytes (the engine's prompt-scoring workspace)
    overhead     = 0.5 GB per GPU

Nemotron-4 340B at a full 4,096-token context, batch 1: KV cache 2.42 GB, activations 0.76 GB,
prompt logprobs 0.39 GB, so Q4_K_M 195.9 GB, Q6_K 281.2 GB, Q8_0 345.1 GB, FP16 686.1 GB — the
published planning table (194.2 / 279.2 / 342.9 / 682.9 GB, which counts 340e9 parameters and no
activations) within 0.9%.
"""
from nemotron.memory.gpus import CATALOG, GPU
from nemotron.memory.planner import (
    Breakdown, MemoryPlan, Precision, Setup, WeightBytes, plan, prompt_logprobs_workspace_bytes, setups_for_split,
    smallest_setups,
)

__all__ = ["CATALOG", "GPU", "Breakdown", "MemoryPlan", "Precision", "Setup", "WeightBytes", "plan",
           "prompt_logprobs_workspace_bytes", "setups_for_split", "smallest_setups"]
