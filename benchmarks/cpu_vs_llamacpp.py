"""Nemotron against llama.cpp on the CPU: same weights, same run, same threads, interleaved.

The issue's model by default: a 140M-parameter Nemotron (hidden 1024, 12 layers, 16 heads / 4 KV,
FFN 4096, vocab 4096; random weights, the demo model's tokenizer), saved as a Hugging Face
directory and converted to GGUF f32 / f16 / q8_0 by llama.cpp's own converter (or, where that
source folder is absent, by `nemotron convert --to gguf`, whose files llama.cpp loads with the same
greedy tokens: tests/checkpoint). `--shape 1b` runs the same on a 0.8B-parameter layout (hidden
2048, 16 layers, 16 heads / 8 KV of 128, FFN 8192, same vocabulary), where the weights outweigh the
per-step host work ten times as much as on the 140M one. Three figures per
engine and precision, each the best of --rounds runs taken in turn (engines alternate within a
round, so a busy machine disturbs both alike):
  decode   batch 1, a 16-token prompt and 128 new tokens, end to end (tok/s of new tokens);
  prefill  a 512-token prompt and one new token (prompt tok/s);
  batch 32 32 concurrent sequences of 16 + 128 tokens (new tok/s over all of them).
Then the issue's targets as ratios, and the fraction of memory bandwidth each batch-1 decode
reaches (weight bytes read per token x tok/s / the copy bandwidth measured in the same run).
Greedy tokens of nemotron fp32 and llama.cpp f32 are compared (random weights give close calls,
so a late divergence is float rounding, an early one a bug).

llama.cpp runs in worker processes under their own interpreter, from its own virtual environment
(not a project dependency: llama-cpp-python builds llama.cpp from source, ~25 minutes on 2 cores):

    python -m venv .venv-llama
    CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=ON" .venv-llama/bin/python -m pip install llama-cpp-python==0.3.36
    .venv-llama/bin/python -m pip download --no-binary :all: --no-deps llama-cpp-python==0.3.36 -d .llama-src
    tar xzf .llama-src/llama_cpp_python-0.3.36.tar.gz -C .llama-src   # vendor/llama.cpp: the converter

    python benchmarks/cpu_vs_llamacpp.py --llama-python .venv-llama/bin/python \\
        --llama-cpp .llama-src/llama_cpp_python-0.3.36/vendor/llama.cpp

Both engines run OpenMP, whose waiting threads either spin (libgomp's default, what llama.cpp's
users get) or sleep (OMP_WAIT_POLICY=PASSIVE, which `nemotron`'s CLI sets). The policy weighs on
each engine differently (llama.cpp's OpenMP build meets an OpenMP barrier after every op: passive
waiting cost it a third of its batch-1 speed on a quiet machine, while spinning collapses both
engines when other work shares the cores), so each engine runs in a worker process per policy
(--wait-policies) and is credited with its best; the targets are printed for every policy (both
engines under it) and for best against best. Workers not running a request are stopped (SIGSTOP),
as an idle worker's threads spin for good under ACTIVE. On a shared machine compare the CPU ms per token
printed last as well (with 1 thread: the work itself), and the load average printed with them; there
the spinning runs crawl (a full run took 15 minutes at a load of 2-5), `--wait-policies PASSIVE`
skips them.

This project's workers run under mimalloc, preloaded as the `nemotron` program preloads it
(nemotron.allocator; NEMOTRON_ALLOCATOR=system in this script's environment keeps glibc's malloc).
llama.cpp allocates its buffers once and runs on the allocator its users get.

The converter runs under this interpreter (it needs torch, numpy and sentencepiece; its gguf-py
comes from the same folder). GGUF files and the checkpoint are kept in --workdir between runs.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import signal
import os
import subprocess
import sys
import time
from pathlib import Path

PROMPT_LEN, NEW_TOKENS, PREFILL_LEN, CONCURRENT = 16, 128, 512, 32
# --shape: ModelConfig fields of the benchmark's random-weight model (the demo tokenizer's 4,096 pieces).
SHAPES = {"issue": dict(hidden_size=1024, intermediate_size=4096, num_layers=12, num_heads=16, num_kv_heads=4,
                        head_dim=64),
          "1b": dict(hidden_size=2048, intermediate_size=8192, num_layers=16, num_heads=16, num_kv_heads=8,
                     head_dim=128)}
LLAMA_TYPES = ("f32", "f16", "q8_0")  # the default set; q4_0 on request (--llama ... q4_0)
LLAMA_CHOICES = (*LLAMA_TYPES, "q4_0")
FIGURES = ("decode", "prefill", "batch 32")
OURS = ("fp32", "bf16", "int8")
# (ours, llama.cpp's, figure, target ratio): the targets; None: a comparison without one.
TARGETS = [("int8", "q8_0", "decode", 1.0), ("bf16", "f16", "decode", 1.0), ("best", "q8_0", "batch 32", 2.0),
           ("best", "q8_0", "prefill", 1.5), ("int4", "q4_0", "decode", None)]


# ---- the llama.cpp worker (runs under --llama-python: imports llama_cpp and numpy only) ----------

class LlamaRunner:
    """One GGUF model and a context per workload, driven through llama.cpp's batch API."""

    def __init__(self, path: str, threads: int) -> None:
        import llama_cpp as lc

        self.lc = lc
        self._quiet = lc.llama_log_callback(lambda level, text, data: None)  # kept alive: llama.cpp calls it
        lc.llama_log_set(self._quiet, ctypes.c_void_p(0))
        params = lc.llama_model_default_params()
        self.model = lc.llama_model_load_from_file(path.encode(), params)
        if not self.model:
            raise SystemExit(f"llama.cpp could not load {path}")
        self.n_vocab = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(self.model))
        self.contexts = {seqs: self._context(seqs, threads) for seqs in (1, CONCURRENT)}
        self.batch = lc.llama_batch_init(max(PREFILL_LEN, CONCURRENT * PROMPT_LEN), 0, 1)

    def _context(self, seqs: int, threads: int):
        lc = self.lc
        params = lc.llama_context_default_params()
        params.n_ctx = 1024 if seqs == 1 else seqs * 256  # 256 positions per sequence when batched
        params.n_batch = params.n_ubatch = max(PREFILL_LEN, seqs * PROMPT_LEN)
        params.n_seq_max = seqs
        params.n_threads = params.n_threads_batch = threads
        return lc.llama_init_from_model(self.model, params)

    def _decode(self, ctx, rows: list[tuple[int, int, int, bool]]) -> None:
        """rows: (token, position, sequence, wants logits)."""
        batch = self.batch
        for i, (token, pos, seq, logits) in enumerate(rows):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, pos, 1, logits
            batch.seq_id[i][0] = seq
        batch.n_tokens = len(rows)
        if self.lc.llama_decode(ctx, batch) != 0:
            raise SystemExit("llama_decode failed")

    def _argmax(self, ctx, row: int) -> int:
        import numpy as np

        logits = np.ctypeslib.as_array(self.lc.llama_get_logits_ith(ctx, row), shape=(self.n_vocab,))
        return int(logits.argmax())

    def generate(self, prompts: list[list[int]], new_tokens: int) -> tuple[float, float, list[list[int]]]:
        """Greedy continuations of all prompts at once (one sequence each); seconds, CPU seconds, tokens."""
        ctx = self.contexts[1 if len(prompts) == 1 else CONCURRENT]
        self.lc.llama_memory_clear(self.lc.llama_get_memory(ctx), True)
        start, cpu = time.perf_counter(), time.process_time()
        rows = [(t, p, s, p == len(prompt) - 1) for s, prompt in enumerate(prompts) for p, t in enumerate(prompt)]
        self._decode(ctx, rows)
        outputs: list[list[int]] = [[] for _ in prompts]
        logit_rows = [i for i, row in enumerate(rows) if row[3]]
        for step in range(new_tokens):
            for s, row in enumerate(logit_rows):
                outputs[s].append(self._argmax(ctx, row))
            if step == new_tokens - 1:
                break
            self._decode(ctx, [(out[-1], len(prompt) + step, s, True)
                               for s, (prompt, out) in enumerate(zip(prompts, outputs))])
            logit_rows = list(range(len(prompts)))
        return time.perf_counter() - start, time.process_time() - cpu, outputs


# OMP_WAIT_POLICY of a worker: "default" leaves it unset (libgomp spins a while, then sleeps), ACTIVE spins.
POLICIES = ("PASSIVE", "default", "ACTIVE")


def worker(args: argparse.Namespace) -> None:
    """JSON lines in ({"model", "prompts", "new_tokens"}), JSON lines out ({"seconds", "cpu", "tokens"})."""
    if args.worker:  # llama.cpp: NAME=PATH of each GGUF
        runners = {name: LlamaRunner(path, args.threads) for name, path in
                   (item.split("=", 1) for item in args.worker)}
        sizes = {}
    else:  # this project's engine: one runner per precision
        import torch

        torch.set_num_threads(args.threads)
        runners = {kind: OurRunner(args.workdir / "hf", kind) for kind in args.ours}
        sizes = {kind: runner.bytes_per_token for kind, runner in runners.items()}
    print(json.dumps({"ready": True, "bytes_per_token": sizes}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        seconds, cpu, tokens = runners[request["model"]].generate(request["prompts"], request["new_tokens"])
        print(json.dumps({"seconds": seconds, "cpu": cpu, "tokens": tokens}), flush=True)


# ---- the benchmark (this project's interpreter) --------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llama-python", required=True, help="interpreter of the environment holding llama_cpp")
    parser.add_argument("--llama-cpp", required=True, type=Path,
                        help="llama.cpp source folder (its converter; without one, `nemotron convert --to gguf`)")
    parser.add_argument("--shape", choices=list(SHAPES), default="issue", help="the model's layout (see above)")
    parser.add_argument("--workdir", type=Path, help="checkpoint and GGUF files, kept between runs "
                        "(default /tmp/nemotron-vs-llamacpp, with -SHAPE for other shapes)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="best of this many interleaved runs")
    parser.add_argument("--ours", nargs="+", default=list(OURS), choices=["fp32", "bf16", "int8", "int4"])
    parser.add_argument("--llama", nargs="+", default=list(LLAMA_TYPES), choices=list(LLAMA_CHOICES),
                        help="q4_0 comes from llama.cpp's own quantizer (llama_model_quantize) over the f32 file")
    parser.add_argument("--figures", nargs="+", default=list(FIGURES), choices=list(FIGURES))
    parser.add_argument("--wait-policies", nargs="+", default=list(POLICIES), choices=list(POLICIES),
                        help="OMP_WAIT_POLICY of the workers (each engine runs under each)")
    parser.add_argument("--worker", nargs="*", help=argparse.SUPPRESS)  # run as a worker (NAME=PATH: llama.cpp)
    args = parser.parse_args()
    if args.workdir is None:
        args.workdir = Path("/tmp/nemotron-vs-llamacpp" + ("" if args.shape == "issue" else f"-{args.shape}"))
    if args.worker is not None:
        worker(args)
        return
    if "OMP_WAIT_POLICY" in os.environ:
        # This process measures the copy bandwidth with OpenMP threads: under ACTIVE they spin for good
        # afterwards and hold a core while the workers are timed (a run so started gave each engine 65-69%
        # of its two cores and a third of its speed). Each worker sets its own policy; this one needs none.
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    run(args)


def run(args: argparse.Namespace) -> None:
    import torch

    from nemotron.engine.cpu_trace import TRACE_AFTER_STEPS

    torch.set_num_threads(args.threads)  # the copy bandwidth, measured here, with the engines' threads
    checkpoint = make_checkpoint(args.workdir / "hf", args.shape)
    ggufs = {kind: convert(args.llama_cpp, checkpoint, args.workdir, kind, args.llama_python) for kind in args.llama}
    llama_args = ["--worker", *[f"{k}={p}" for k, p in ggufs.items()]]
    ours_args = ["--workdir", str(args.workdir), "--ours", *args.ours, "--worker"]
    workers = [(f"llama.cpp {{}} [{policy}]", Worker(args.llama_python, llama_args, policy, args.threads))
               for policy in args.wait_policies]
    workers += [(f"nemotron {{}} [{policy}]", Worker(sys.executable, ours_args, policy, args.threads, ours=True))
                for policy in args.wait_policies]
    runners = [(label.format(k), w.runner(k)) for label, w in workers[:len(args.wait_policies)] for k in ggufs]
    runners += [(label.format(k), w.runner(k)) for label, w in workers[len(args.wait_policies):] for k in args.ours]
    bandwidth = copy_bandwidth()
    print(f"{args.threads} threads, load average {os.getloadavg()[0]:.1f}, torch {torch.__version__} "
          f"({torch.backends.cpu.get_cpu_capability()}), copy bandwidth {bandwidth / 1e9:.1f} GB/s (read + write, "
          f"best of the run); each engine under OMP_WAIT_POLICY {' and '.join(args.wait_policies)}")

    best: dict[tuple[str, str], float] = {}
    best_cpu: dict[tuple[str, str], float] = {}  # CPU seconds per token: the work, whatever the machine's load
    best_share: dict[tuple[str, str], float] = {}  # CPU seconds / (wall seconds x threads) of the best run
    tokens: dict[str, list[int]] = {}
    # Warm-up: first-call allocations, weight packing and our batch-1 decode trace, made once a row
    # count has decoded TRACE_AFTER_STEPS steps (engine.cpu_trace), outside the timings.
    for _, runner in runners:
        runner([list(range(4, 4 + PROMPT_LEN))], TRACE_AFTER_STEPS + 4)
    loads = []
    for round_ in range(args.rounds):
        # Fresh prompts every round: our engine's prefix cache would otherwise serve repeats for free.
        workloads = {f: work for f, work in make_workloads(round_).items() if f in args.figures}
        for figure, (prompts, new_tokens, counted) in workloads.items():
            for name, runner in runners:
                seconds, cpu, out = runner(prompts, new_tokens)
                rate, share = counted / seconds, cpu / (seconds * args.threads)
                if rate > best.get((name, figure), 0.0):
                    best[name, figure], best_share[name, figure] = rate, share
                best_cpu[name, figure] = min(best_cpu.get((name, figure), float("inf")), cpu / counted)
                print(f"  {figure:8} {name:26} {rate:9.1f} tok/s  {cpu / counted * 1e3:8.2f} CPU ms/token  "
                      f"CPU share {share:4.0%}", flush=True)
                if figure == "decode":
                    tokens[name] = out[0]
        bandwidth = max(bandwidth, copy_bandwidth())
        loads.append(os.getloadavg()[0])
        print(f"round {round_ + 1}/{args.rounds} done, load average {loads[-1]:.1f}", flush=True)
    sizes = {}
    for label, w in workers:
        sizes.update({label.format(k): n for k, n in w.bytes_per_token.items()})
        w.close()
    per_token = {name: gguf_bytes_per_token(ggufs[name.split()[1]], args.llama_cpp) if name.startswith("llama")
                 else sizes[name] for name, _ in runners}
    report(best, tokens, bandwidth, per_token, args.ours, args.wait_policies)
    figures = [f for f in FIGURES if any(key[1] == f for key in best_cpu)]
    print(f"\nCPU ms per token (best; {args.threads} thread(s), spinning threads count too; load average "
          f"{min(loads):.1f}-{max(loads):.1f} over the rounds), and the CPU share of the fastest run (CPU seconds "
          f"over wall seconds x threads: below 100% the engine waited, for the cores or for its own threads)")
    print(f"{'':32}" + "".join(f"{f:>12}{'share':>7}" for f in figures))
    for name, _ in runners:
        print(f"{name:32}" + "".join(f"{best_cpu[name, f] * 1e3:12.2f}{best_share[name, f]:7.0%}" for f in figures))


def make_workloads(seed: int) -> dict[str, tuple[list[list[int]], int, int]]:
    """figure -> (prompts, new tokens, tokens counted for the rate)."""
    import random

    rng = random.Random(seed)

    def prompt(n: int) -> list[int]:
        return [rng.randrange(4, 4096) for _ in range(n)]

    return {"decode": ([prompt(PROMPT_LEN)], NEW_TOKENS, NEW_TOKENS),
            "prefill": ([prompt(PREFILL_LEN)], 1, PREFILL_LEN),
            "batch 32": ([prompt(PROMPT_LEN) for _ in range(CONCURRENT)], NEW_TOKENS, CONCURRENT * NEW_TOKENS)}


def make_checkpoint(directory: Path, shape: str) -> Path:
    import shutil

    import torch

    from nemotron.assets import DEMO_MODEL_DIR
    from nemotron.checkpoint.hf import save_hf_dir
    from nemotron.model.config import ModelConfig
    from nemotron.model.nemotron import build_model, init_random_weights

    if (directory / "config.json").is_file():
        return directory
    config = ModelConfig(vocab_size=4096, max_position_embeddings=2048, torch_dtype="float32", **SHAPES[shape])
    model = build_model(config)
    init_random_weights(model, seed=0)
    with torch.no_grad():  # LayerNorm1p weights away from zero, so that the +1 convention is exercised
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.normal_(0, 0.1)
    save_hf_dir(model.state_dict(), config, directory)
    shutil.copy(DEMO_MODEL_DIR / "tokenizer.model", directory / "tokenizer.model")  # 4096 pieces
    return directory


def convert(llama_cpp: Path, checkpoint: Path, workdir: Path, kind: str, llama_python: str) -> Path:
    out = workdir / f"model-{kind}.gguf"
    if out.is_file():
        return out
    if kind == "q4_0":  # the converter writes no q4_0: llama.cpp's quantizer makes it (Q4_0 matrices, its own
        source = convert(llama_cpp, checkpoint, workdir, "f32", llama_python)  # choice for the output layer)
        script = ("import sys, llama_cpp; p = llama_cpp.llama_model_quantize_default_params(); "
                  "p.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0; "
                  "sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), p))")
        subprocess.run([llama_python, "-c", script, str(source), str(out)], check=True, capture_output=True)
        return out
    converter = llama_cpp / "convert_hf_to_gguf.py"
    if converter.is_file():
        command = [sys.executable, str(converter), str(checkpoint), "--outtype", kind, "--outfile", str(out)]
    else:
        print(f"no {converter}: {out.name} written by `nemotron convert --to gguf`", flush=True)
        command = [sys.executable, "-m", "nemotron", "convert", str(checkpoint), str(out), "--to", "gguf",
                   "--gguf-type", kind]
    subprocess.run(command, check=True, capture_output=True)
    return out


class Worker:
    """A worker process (llama.cpp's, or this project's engine) under one OMP_WAIT_POLICY.

    It is stopped (SIGSTOP) whenever it is not running a request: under ACTIVE an idle worker's OpenMP
    threads spin at their barrier for good (libgomp's spin count is then ~forever), so two idle
    spinning workers held the cores while a third was timed (each timed engine got 50-70% of its two
    cores, which earlier runs blamed on the host)."""

    def __init__(self, python: str, worker_args: list[str], policy: str, threads: int, ours: bool = False) -> None:
        command = [python, __file__, "--llama-python", python, "--llama-cpp", ".", "--threads", str(threads),
                   *worker_args]
        env = {**os.environ, "LLAMA_LOG_LEVEL": "error"}
        if ours:  # this project's engine: under the allocator its CLI runs on
            from nemotron.allocator import preload_env

            env = preload_env(env) or env
        env.pop("OMP_WAIT_POLICY", None)
        if policy != "default":
            env["OMP_WAIT_POLICY"] = policy
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        ready = json.loads(self.process.stdout.readline() or "{}")
        if not ready.get("ready"):
            raise SystemExit(f"the worker {command[1:]} did not start")
        self.bytes_per_token: dict[str, int] = ready["bytes_per_token"]
        self.process.send_signal(signal.SIGSTOP)

    def runner(self, kind: str):
        def run(prompts: list[list[int]], new_tokens: int) -> tuple[float, float, list[list[int]]]:
            self.process.send_signal(signal.SIGCONT)
            self.process.stdin.write(json.dumps({"model": kind, "prompts": prompts, "new_tokens": new_tokens}) + "\n")
            self.process.stdin.flush()
            answer = json.loads(self.process.stdout.readline())
            self.process.send_signal(signal.SIGSTOP)
            return answer["seconds"], answer["cpu"], answer["tokens"]
        return run

    def close(self) -> None:
        self.process.send_signal(signal.SIGCONT)
        self.process.stdin.close()
        self.process.wait(timeout=60)


class OurRunner:
    """The engine (`LLM`) on the checkpoint in one precision; int8 / int4 quantize the bf16 model."""

    def __init__(self, checkpoint: Path, name: str) -> None:
        sys.path.insert(0, str(Path(__file__).parent))
        from common import bytes_per_step

        from nemotron.checkpoint.load import load_model
        from nemotron.engine.llm import LLM
        from nemotron.engine.llm_engine import EngineConfig
        from nemotron.quant import quantize

        loaded = load_model(checkpoint, dtype="float32")
        if name in ("int8", "int4"):  # from the fp32 weights, as llama.cpp's q8_0
            quantize(loaded.model, name)
        if name != "fp32":
            for param in loaded.model.parameters():  # the rest in bf16; quantized buffers as they are
                param.data = param.data.bfloat16()
        # fp32 with oneDNN prepacking (EngineConfig.cpu_fp32_kernels), the fast CPU fp32 option.
        self.llm = LLM(loaded, EngineConfig(max_num_seqs=CONCURRENT, cpu_fp32_kernels=True))
        self.bytes_per_token = bytes_per_step(self.llm.engine.model)  # 1 byte a weight for fbgemm's int8

    def generate(self, prompts: list[list[int]], new_tokens: int) -> tuple[float, float, list[list[int]]]:
        from nemotron.engine.sampling import SamplingParams

        params = SamplingParams(max_tokens=new_tokens, temperature=0, ignore_eos=True)
        start, cpu = time.perf_counter(), time.process_time()
        results = self.llm.generate(prompts, params)
        return time.perf_counter() - start, time.process_time() - cpu, [r.outputs[0].token_ids for r in results]


def gguf_bytes_per_token(path: Path, llama_cpp: Path) -> int:
    """Bytes of every tensor but the token embedding table (llama.cpp reads one row of it per token)."""
    if (llama_cpp / "gguf-py").is_dir():
        sys.path.insert(0, str(llama_cpp / "gguf-py"))
    from gguf import GGUFReader

    return sum(int(t.n_bytes) for t in GGUFReader(path).tensors if t.name != "token_embd.weight")


def copy_bandwidth(nbytes: int = 512 * 1024**2) -> float:
    """Bytes/s read + written by a large tensor copy (best of 5)."""
    import torch

    src = torch.ones(nbytes // 2, dtype=torch.float16)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - start)
    return 2 * nbytes / best


def report(best: dict[tuple[str, str], float], tokens: dict[str, list[int]], bandwidth: float,
           per_token: dict[str, int], ours: list[str], policies: list[str]) -> None:
    names = sorted({name for name, _ in best}, key=lambda n: (not n.startswith("llama"), n))
    figures = [f for f in FIGURES if any(key[1] == f for key in best)]
    # Each engine and precision under its best policy, figure by figure.
    for name in names:
        engine = name.rsplit(" [", 1)[0]
        for f in figures:
            if (name, f) in best:
                best[f"{engine} [best]", f] = max(best.get((f"{engine} [best]", f), 0.0), best[name, f])
                per_token[f"{engine} [best]"] = per_token[name]
    names = sorted({name for name, _ in best}, key=lambda n: (not n.startswith("llama"), n))
    print(f"\n{'tok/s (best of rounds)':32}" + "".join(f"{f:>12}" for f in figures) + f"{'bandwidth':>12}")
    for name in names:
        used = f"{best[name, 'decode'] * per_token[name] / bandwidth:11.0%}" if (name, "decode") in best else ""
        print(f"{name:32}" + "".join(f"{best[name, f]:12.1f}" for f in figures) + used)
    print(f"(bandwidth: batch-1 decode's weight bytes per token x tok/s / {bandwidth / 1e9:.1f} GB/s copy)")

    for policy in [*policies, "best"]:
        print(f"\ntargets, both engines under {policy if policy != 'best' else 'their best policy'}")
        for ours_kind, theirs, figure, target in TARGETS:
            theirs_name = f"llama.cpp {theirs} [{policy}]"
            candidates = ours if ours_kind == "best" else [ours_kind]
            candidates = [k for k in candidates if (f"nemotron {k} [{policy}]", figure) in best]
            if (theirs_name, figure) not in best or not candidates:
                continue
            kind = max(candidates, key=lambda k: best[f"nemotron {k} [{policy}]", figure])
            ratio = best[f"nemotron {kind} [{policy}]", figure] / best[theirs_name, figure]
            met = target is not None and ratio >= target
            verdict = "no target" if target is None else f"target >= {target}x: {'met' if met else 'NOT met'}"
            print(f"  {figure:9} nemotron {kind:5} / llama.cpp {theirs:5} = {ratio:5.2f}x  ({verdict})")

    for policy in policies:
        if f"nemotron fp32 [{policy}]" in tokens and f"llama.cpp f32 [{policy}]" in tokens:
            a, b = tokens[f"nemotron fp32 [{policy}]"], tokens[f"llama.cpp f32 [{policy}]"]
            same = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), len(a))
            print("\ngreedy tokens, nemotron fp32 vs llama.cpp f32: "
                  + ("identical" if same == len(a) else f"first difference at new token {same} of {len(a)}"))
            break


if __name__ == "__main__":
    main()
