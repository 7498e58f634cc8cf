"""Tensor and pipeline parallelism on torch.distributed (NCCL on GPUs, gloo on CPU).

Per rank: `layout = ParallelLayout.from_world(tp, pp)` after init_process_group, then
`load_sharded(spec, layout, ...)` (or, for a model already in memory, `pipeline_stage` then
`tensor_parallel`). Size the rank's KV pool with `layout.local_config(config)`.
"""
from nemotron.parallel.layout import ParallelLayout
from nemotron.parallel.pipeline import (MicroBatch, StageTimes, bubble_fraction, pipeline_forward, pipeline_stage,
                                        result_to_rank0)
from nemotron.parallel.shard_load import load_sharded, shard_bytes
from nemotron.parallel.tensor import Shard, VocabParallelEmbedding, VocabParallelHead, shard_plan, tensor_parallel

__all__ = ["MicroBatch", "ParallelLayout", "Shard", "StageTimes", "VocabParallelEmbedding", "VocabParallelHead",
           "bubble_fraction", "load_sharded", "pipeline_forward", "pipeline_stage", "result_to_rank0", "shard_bytes",
           "shard_plan", "tensor_parallel"]
