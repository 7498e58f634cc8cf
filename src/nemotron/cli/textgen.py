"""Streaming text from a model to the terminal, for `nemotron generate` and `nemotron chat`."""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator

import torch

from nemotron.assets import default_model_dir
from nemotron.checkpoint.load import LoadedModel, load_model
from nemotron.engine.generate import GenerationChunk
from nemotron.engine.llm import LLM
from nemotron.engine.llm_engine import EngineConfig
from nemotron.engine.sampling import SamplingParams
from nemotron.errors import NemotronError
from nemotron.model.nemotron_h import CAUSAL_LMS
from nemotron.tokenizer import CHAT_STOP_STRINGS, Tokenizer, render_chat


Streamer = Callable[[list[int], SamplingParams], Iterator[GenerationChunk]]


def run(args: argparse.Namespace) -> None:
    if args.command == "generate":
        if len(args.args) > 2:
            raise NemotronError("generate takes [MODEL] PROMPT; quote a prompt that contains spaces")
        spec, prompt = (args.args if len(args.args) == 2 else (None, args.args[0]))
    else:
        spec, prompt = args.model, None
    launch = _parallel_launch(spec, args)
    if launch is None:  # one process: the engine with one sequence (chat turns reuse their prefix's K/V)
        loaded = _checked(_load(spec, args), args)
        _talk(loaded, LLM(loaded, EngineConfig(max_num_seqs=1)).stream, prompt, args)
        return
    if launch.is_worker:  # a torchrun rank other than 0
        launch.serve_steps()
        return
    try:
        loaded = _checked(launch.start(), args)
        llm = LLM(loaded, EngineConfig(parallel=launch.options.parallel))
        _talk(loaded, llm.stream, prompt, args)
    finally:
        launch.close()


def _talk(loaded: LoadedModel, stream: Streamer, prompt: str | None, args: argparse.Namespace) -> None:
    if prompt is not None:
        _generate(loaded, stream, prompt, args)
    else:
        _chat(loaded, stream, args)


def _parallel_launch(spec: str | None, args: argparse.Namespace):
    from nemotron.cli.main import parallel_config, parallel_launcher

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return parallel_launcher(args, str(spec or default_model_dir()), EngineConfig(parallel=parallel_config(args)),
                             device)


def _load(spec: str | None, args: argparse.Namespace) -> LoadedModel:
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return load_model(spec or default_model_dir(), dtype=args.dtype, device=device, trust_pickle=args.trust_pickle,
                      force=args.force)


def _checked(loaded: LoadedModel, args: argparse.Namespace) -> LoadedModel:
    if args.tokenizer:
        loaded.tokenizer = Tokenizer.from_file(args.tokenizer)
    if args.lora:
        from nemotron.checkpoint.peft import merge_adapter_into

        merge_adapter_into(loaded, args.lora)
    loaded.require_tokenizer("--tokenizer FILE")
    if not isinstance(loaded.model, CAUSAL_LMS):
        raise NemotronError(f"{loaded.source.spec} is a reward model; it scores text, it does not generate")
    if loaded.tokenizer.vocab_size > loaded.config.vocab_size:
        raise NemotronError(f"the tokenizer has {loaded.tokenizer.vocab_size} pieces but the model only "
                            f"{loaded.config.vocab_size} embeddings")
    return loaded


def _sampling_params(args: argparse.Namespace, stop_strings: list[str]) -> SamplingParams:
    penalties = {} if args.greedy else dict(  # --greedy is NeMo's: no penalty either
        repetition_penalty=args.repetition_penalty, presence_penalty=args.presence_penalty,
        frequency_penalty=args.frequency_penalty)
    return SamplingParams(
        max_tokens=args.max_new_tokens, temperature=0.0 if args.greedy else args.temperature,
        top_k=args.top_k, top_p=args.top_p, min_p=args.min_p, seed=args.seed, stop=stop_strings, **penalties)


def _stream(stream: Streamer, prompt_ids: list[int], params: SamplingParams) -> str:
    """Print the completion as it is generated; return it. Timing goes to stderr."""
    start, count, pieces, reason = time.perf_counter(), 0, [], "length"
    for chunk in stream(prompt_ids, params):
        count += chunk.token_id is not None
        pieces.append(chunk.text)
        print(chunk.text, end="", flush=True)
        reason = chunk.finish_reason or reason
    elapsed = time.perf_counter() - start
    print()
    print(f"[{count} tokens in {elapsed:.2f} s, {count / max(elapsed, 1e-9):.1f} tokens/s, "
          f"finish: {reason}]", file=sys.stderr)
    return "".join(pieces)


def _generate(loaded: LoadedModel, stream: Streamer, prompt: str, args: argparse.Namespace) -> None:
    stops: list[str] = []
    if args.chat:
        messages = [{"role": "system", "content": args.system}, {"role": "user", "content": prompt}]
        prompt, stops = render_chat(messages), list(CHAT_STOP_STRINGS)
    prompt_ids = loaded.tokenizer.encode(prompt, add_bos=args.add_bos)
    _stream(stream, prompt_ids, _sampling_params(args, stops))


def _chat(loaded: LoadedModel, stream: Streamer, args: argparse.Namespace) -> None:
    print(f"Chatting with {loaded.source.spec}. /reset clears the history, /exit or Ctrl-D quits.",
          file=sys.stderr)
    history: list[dict[str, str]] = []
    params = _sampling_params(args, list(CHAT_STOP_STRINGS))
    while True:
        try:
            user = input("you> ")
        except EOFError:
            print(file=sys.stderr)
            return
        except UnicodeDecodeError as err:  # a strict-UTF-8 terminal, a line of another encoding
            print(f"error: that line is not UTF-8 ({err.reason} at byte {err.start}); type it again",
                  file=sys.stderr)
            continue
        try:
            user.encode("utf-8")
        except UnicodeEncodeError as err:  # stdin's surrogateescape: bytes that are no UTF-8
            print(f"error: that line is not UTF-8 (a stray byte at character {err.start + 1}); type it again",
                  file=sys.stderr)
            continue
        if user.strip() in ("/exit", "/quit"):
            return
        if user.strip() == "/reset":
            history.clear()
            continue
        if not user.strip():
            continue
        history.append({"role": "user", "content": user})
        messages = [{"role": "system", "content": args.system}, *history]
        prompt_ids = loaded.tokenizer.encode(render_chat(messages))
        print("assistant> ", end="", flush=True)
        try:
            reply = _stream(stream, prompt_ids, params)
        except NemotronError as err:  # e.g. the history outgrew the context: keep the session alive
            print(f"\nerror: {err}; /reset starts over", file=sys.stderr)
            history.pop()
            continue
        history.append({"role": "assistant", "content": reply})
