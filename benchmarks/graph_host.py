"""Host time of a CUDA-graph decode step, measured on any machine: the engine runs its GPU decode
path (Triton backend, DecodeGraphs with static input buffers) with the graph replay replaced by
ready-made logits, so what is timed is everything the host does per step (scheduling, filling the
graph's inputs, sampling, outputs) and no model. On a GPU that time leaves the GPU idle, since a
step waits for the sampled tokens before the next one is planned. The prompt step runs for real (a
2-layer toy model, its Triton kernels interpreted) and is left out: the engine's steps are timed
from the first decode step on.

    python benchmarks/graph_host.py                 # batch 1 and 64, vocabulary 256
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")  # the Triton backend's kernels never run here, but import
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from common import NullTokenizer  # noqa: E402

from nemotron.checkpoint.load import LoadedModel, ModelSource, SourceKind  # noqa: E402
from nemotron.engine.cuda_graphs import DecodeGraphs  # noqa: E402
from nemotron.engine.llm import LLM  # noqa: E402
from nemotron.engine.llm_engine import EngineConfig  # noqa: E402
from nemotron.engine.sampling import SamplingParams  # noqa: E402
from nemotron.model.config import ModelConfig  # noqa: E402
from nemotron.model.nemotron import build_model, init_random_weights  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--vocab", type=int, default=256, help="small: sampling's math stays out of the figure")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs is reported")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = ModelConfig(vocab_size=args.vocab, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                         num_kv_heads=2, head_dim=16, max_position_embeddings=4096, torch_dtype="float32")
    model = build_model(config)
    init_random_weights(model)
    loaded = LoadedModel(model.eval(), config, NullTokenizer(config.vocab_size),
                         ModelSource(SourceKind.PRESET, "toy", None))
    max_batch = max(args.batch_sizes)
    llm = LLM(loaded, EngineConfig(max_num_seqs=max_batch, attention_backend="triton"))
    engine = llm.engine
    graphs = DecodeGraphs(engine.model, engine.kv_cache, max_batch=max_batch, max_blocks=256, capture=False)
    logits = {bucket: torch.randn(bucket, config.vocab_size) for bucket in graphs.buckets}
    graphs._forward = lambda bucket: logits[bucket]  # the replay, minus the model
    engine.runner.graphs = graphs
    for batch in args.batch_sizes:
        prompts = [list(range(5 + i, 21 + i)) for i in range(batch)]
        params = SamplingParams(max_tokens=args.steps + 1, temperature=0, ignore_eos=True)
        best = float("inf")
        for _ in range(args.repeats + 1):  # the first round warms up
            for prompt in prompts:
                engine.add_request(engine.check_request(prompt, params))
            engine.step()  # the prompts
            start = time.perf_counter()
            while engine.has_unfinished():
                engine.step()
            best = min(best, time.perf_counter() - start)
        print(f"batch {batch:3d}: {best / args.steps * 1e3:.3f} ms of host time per decode step (replay faked)",
              flush=True)


if __name__ == "__main__":
    main()
