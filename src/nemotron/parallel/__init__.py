"""Tensor and pipeline parallelism on torch.distributed (NCCL on GPUs, gloo on CPU).

Per rank, after `torch.distributed.init_process_group`:

    layout = ParallelLayout.from_world(tp, pp)          # collective: creates the TP and PP groups
    loaded = load_sharded(spec, layout, dtype=..., device=...)   # this rank's slices only
    model = loaded.model      # model.config: this rank's view (its layers, its heads): size the KV pool
                              # with it; loaded.config is the whole model's

Per forward step every rank runs the same calls with the same inputs:
- pp == 1: `model.model(input_ids, positions, cache)` then `model.lm_head(rows)`; the row-parallel
  layers and the vocabulary-parallel embedding all-reduce inside, the head all-gathers the logits
  (`model.lm_head.dst = 0` gathers them on TP rank 0 only, the others get None);
- pp > 1: `pipeline_forward(model, layout, [MicroBatch(...), ...])` (input_ids needed on the first
  stage only; `prepare` sets each micro-batch's KV-cache layout) returns hidden states on the last
  stage; there `model.lm_head` / `model.rm_head` runs, and `result_to_rank0` brings the result to
  rank 0.
A model already in memory is split with `pipeline_stage(model, layout)` then
`tensor_parallel(model, layout)`.
"""
from nemotron.parallel.layout import ParallelLayout
from nemotron.parallel.pipeline import (MicroBatch, StageTimes, bubble_fraction, pipeline_forward, pipeline_stage,
                                        result_to_rank0)
from nemotron.parallel.shard_load import load_sharded, shard_bytes
from nemotron.parallel.tensor import Shard, VocabParallelEmbedding, VocabParallelHead, shard_plan, tensor_parallel

__all__ = ["MicroBatch", "ParallelLayout", "Shard", "StageTimes", "VocabParallelEmbedding", "VocabParallelHead",
           "bubble_fraction", "load_sharded", "pipeline_forward", "pipeline_stage", "result_to_rank0", "shard_bytes",
           "shard_plan", "tensor_parallel"]
