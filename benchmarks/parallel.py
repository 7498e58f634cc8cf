"""Tensor / pipeline parallelism: communication per step and decode speed against one device.

For each layout, the engine decodes a batch of requests (ranks spawned as `LLM(tensor_parallel_size=)`
does) and rank 0 counts what it sends and receives in one decode step: all-reduces (2 per layer
under TP, plus 1 for the vocabulary-parallel embedding), the logits gather, the step plan broadcast,
pipeline sends. Prints step time, tokens/s and the ratio to TP 1 in the same run.

    python benchmarks/parallel.py --layouts 1x1 2x1            # CPU, gloo (report only: cores are shared)
    python benchmarks/parallel.py --preset minitron-8b --layouts 1x1 2x1 4x1 8x1   # GPUs, NCCL
"""
from __future__ import annotations

import argparse
import pickle
import shutil
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))
from common import SMALL, NullTokenizer  # noqa: E402

from nemotron.checkpoint.hf import save_hf_dir  # noqa: E402
from nemotron.checkpoint.load import load_model  # noqa: E402
from nemotron.engine.llm import LLM  # noqa: E402
from nemotron.engine.llm_engine import EngineConfig  # noqa: E402
from nemotron.engine.sampling import SamplingParams  # noqa: E402
from nemotron.model.nemotron import build_model, init_random_weights  # noqa: E402
from nemotron.parallel.launch import RankOptions, start_local  # noqa: E402
from nemotron.parallel.pipeline import StageTimes  # noqa: E402
from nemotron.parallel.runtime import ParallelConfig  # noqa: E402


@contextmanager
def counting(calls: Counter, nbytes: Counter):
    """Count rank 0's torch.distributed calls and their payload bytes while the block runs."""
    def wrap(name, size):
        original = getattr(dist, name)

        def counted(*args, **kwargs):
            calls[name] += 1
            nbytes[name] += size(*args)
            return original(*args, **kwargs)
        return name, original, counted

    tensor_bytes = lambda t, *_: t.numel() * t.element_size()  # noqa: E731
    wrapped = [wrap("all_reduce", tensor_bytes), wrap("send", tensor_bytes), wrap("recv", tensor_bytes),
               wrap("isend", tensor_bytes), wrap("all_gather", lambda parts, t, *_: t.numel() * t.element_size() * len(parts)),
               wrap("broadcast_object_list", lambda objs, *_: len(pickle.dumps(objs[0])))]
    for name, _, counted in wrapped:
        setattr(dist, name, counted)
    try:
        yield
    finally:
        for name, original, _ in wrapped:
            setattr(dist, name, original)


def run_layout(spec: str, tp: int, pp: int, args: argparse.Namespace) -> dict:
    config = EngineConfig(max_num_seqs=args.batch, parallel=ParallelConfig(tp, pp, micro_batches=args.micro_batches))
    ranks = None
    if tp * pp > 1:
        ranks, loaded = start_local(RankOptions(spec, config, args.dtype, args.device, threads=args.threads))
    else:
        loaded = load_model(spec, dtype=args.dtype, device=args.device)
    loaded.tokenizer = NullTokenizer(loaded.config.vocab_size)
    try:
        llm = LLM(loaded, config)
        generator = torch.Generator().manual_seed(0)
        prompts = [torch.randint(4, loaded.config.vocab_size, (args.prompt_len,), generator=generator).tolist()
                   for _ in range(args.batch)]
        params = SamplingParams(max_tokens=args.new_tokens, temperature=0, ignore_eos=True)
        llm.generate(prompts, SamplingParams(max_tokens=4, temperature=0, ignore_eos=True))  # warm-up
        for ids in prompts:  # prefill, then count one decode step of the whole batch
            llm.engine.add_request(llm.engine.check_request(ids, params))
        llm.engine.step()
        calls, nbytes = Counter(), Counter()
        with counting(calls, nbytes):
            llm.engine.step()
        while llm.engine.has_unfinished():
            llm.engine.step()
        channel = llm.engine.runner.channel
        if channel is not None:
            channel.stage_times = StageTimes()  # the timed run only
        start = time.perf_counter()
        llm.generate(prompts, params)
        elapsed = time.perf_counter() - start
        bubble = channel.stage_times.bubble if channel is not None and pp > 1 else None
    finally:
        if ranks is not None:
            ranks.close()
    steps = args.new_tokens  # one decode step per generated token (after the prefill step)
    return {"layout": f"TP {tp} x PP {pp}", "calls": calls, "bytes": nbytes, "tok_s": args.batch * args.new_tokens / elapsed,
            "step_ms": 1000 * elapsed / steps, "bubble": bubble, "layers": loaded.model.config.num_layers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small", help="small (CPU-sized, written to a temporary directory), "
                        "a preset name (random weights), or a model directory")
    parser.add_argument("--layouts", nargs="+", default=["1x1", "2x1"], help="TPxPP, e.g. 2x1 4x1 2x2")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--micro-batches", type=int, default=None, help="pipeline micro-batches per step")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per rank")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    temp = None
    spec = args.preset
    if args.preset == "small":
        temp = Path(tempfile.mkdtemp(prefix="nemotron-parallel-bench-"))
        model = build_model(SMALL)
        init_random_weights(model, seed=0)
        save_hf_dir(model.state_dict(), SMALL, temp)
        spec = str(temp)
    try:
        results = [run_layout(spec, *map(int, layout.split("x")), args) for layout in args.layouts]
    finally:
        if temp is not None:
            shutil.rmtree(temp)
    base = results[0]
    print(f"\n{args.preset} on {args.device}, batch {args.batch}, prompt {args.prompt_len}, {args.new_tokens} new tokens"
          f" ({torch.get_num_threads()} threads on rank 0)")
    print(f"{'layout':14}{'all-reduce/step':>16}{'per layer':>10}{'bytes/step':>12}{'plan bytes':>11}"
          f"{'step ms':>9}{'tok/s':>9}{'vs ' + base['layout']:>16}{'bubble':>8}")
    for r in results:
        calls, nbytes = r["calls"], r["bytes"]
        moved = sum(nbytes[k] for k in ("all_reduce", "all_gather", "send", "recv", "isend"))
        per_layer = (calls["all_reduce"] - (1 if calls["all_reduce"] else 0)) / r["layers"]  # less the embedding's
        bubble = f"{r['bubble']:.0%}" if r["bubble"] is not None else "-"
        print(f"{r['layout']:14}{calls['all_reduce']:>16}{per_layer:>10.1f}{moved / 1e3:>10.1f}kB"
              f"{nbytes['broadcast_object_list']:>10}B{r['step_ms']:>9.1f}{r['tok_s']:>9.1f}"
              f"{r['tok_s'] / base['tok_s']:>15.2f}x{bubble:>8}")


if __name__ == "__main__":
    main()
