"""`LLM(model).generate(prompts, sampling_params)`: the engine for offline batches, called as vLLM's.

    from nemotron import LLM, SamplingParams
    llm = LLM("./Nemotron-Mini-4B-Instruct", dtype="bfloat16", max_model_len=2048)
    for out in llm.generate(["The capital of France is"], SamplingParams(temperature=0, max_tokens=8)):
        print(out.outputs[0].text)

Results are vLLM's RequestOutput / CompletionOutput (engine/request_output.py).
"""
from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import torch

from nemotron.checkpoint.load import LoadedModel, load_model
from nemotron.engine.generate import GenerationChunk
from nemotron.engine.llm_engine import EngineConfig, EngineRequest, LLMEngine, RequestError
from nemotron.engine.request_output import CompletionBuilder, RequestOutput, prompt_logprob_dicts
from nemotron.engine.sampling import SamplingParams, derive_seed
from nemotron.errors import NemotronError
from nemotron.model.nemotron_h import CAUSAL_LMS
from nemotron.tokenizer import CHAT_STOP_STRINGS, Tokenizer, render_chat

Prompt = str | list[int] | Mapping  # text, token ids, or vLLM's {"prompt": ...} / {"prompt_token_ids": ...}


class LLM:
    """A model and its engine. `model`: a path or preset (or a LoadedModel). The keywords are
    vLLM's: dtype ("auto", "float32", "bfloat16", "float16"), tensor_parallel_size /
    pipeline_parallel_size (> 1: this process becomes rank 0 of that many ranks on this machine, one
    GPU each or CPU processes, each loading its part of the model; close() or `with` stops them),
    max_model_len (serve a shorter context), gpu_memory_utilization (the part of the memory free after
    loading the weights given to the KV cache), max_num_seqs, max_num_batched_tokens, block_size,
    enable_prefix_caching, enforce_eager (no CUDA graphs, no CPU decode traces), seed (of the global random generator,
    which unseeded requests draw from; 0 by default as vLLM's, so that a script samples the same on every run;
    None leaves the generator as it is). Beyond vLLM, as the CLI: device, tokenizer (a tokenizer file
    instead of the model's), lora (a PEFT adapter merged into the weights), force (skip the
    fits-in-memory check), trust_pickle. A LoadedModel with a parallel config is rank 0's part of a run
    started by nemotron.parallel.launch."""

    def __init__(self, model: str | Path | LoadedModel, config: EngineConfig | None = None, *,
                 tokenizer: str | Path | None = None, dtype: str | torch.dtype | None = None,
                 device: str | None = None, tensor_parallel_size: int = 1, pipeline_parallel_size: int = 1,
                 max_model_len: int | None = None, gpu_memory_utilization: float | None = None,
                 max_num_seqs: int | None = None, max_num_batched_tokens: int | None = None,
                 block_size: int | None = None, enable_prefix_caching: bool | None = None,
                 enforce_eager: bool = False, seed: int | None = 0, lora: str | Path | None = None,
                 force: bool = False, trust_pickle: bool = False, trust_remote_code: bool = False) -> None:
        # trust_remote_code: vLLM's, accepted so that its scripts run; this package never runs code from a
        # checkpoint (the architecture is its own), so there is nothing to trust.
        self.ranks = None
        config = _engine_config(config or EngineConfig(), tensor_parallel_size, pipeline_parallel_size,
                                max_model_len=max_model_len, gpu_memory_fraction=gpu_memory_utilization,
                                max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                                block_size=block_size, enable_prefix_caching=enable_prefix_caching,
                                cuda_graphs=False if enforce_eager else None,
                                cpu_decode_trace=False if enforce_eager else None)
        dtype = None if dtype == "auto" else dtype
        if seed is not None:
            torch.manual_seed(seed)
        if config.parallel.world_size > 1 and not isinstance(model, LoadedModel):  # else: rank 0's part, ranks started
            from nemotron.parallel.launch import RankOptions, start_local

            if lora is not None:
                raise NemotronError("lora is merged into a whole model; merge it first (nemotron convert) to run "
                                    "it split over ranks")
            device = device or ("cuda" if torch.cuda.is_available() else "cpu")
            self.ranks, model = start_local(RankOptions(str(model), config, dtype, torch.device(device).type,
                                                        trust_pickle))
        elif not isinstance(model, LoadedModel):
            device = device or ("cuda" if torch.cuda.is_available() else "cpu")
            model = load_model(model, dtype=dtype, device=device, trust_pickle=trust_pickle, force=force)
        try:
            if tokenizer is not None:
                model.tokenizer = Tokenizer.from_file(tokenizer)
            if lora is not None:
                from nemotron.checkpoint.peft import merge_adapter_into

                merge_adapter_into(model, lora)
            if not isinstance(model.model, CAUSAL_LMS):
                raise NemotronError(f"{model.source.spec} is a reward model; it scores text, it does not generate")
            model.require_tokenizer("tokenizer=FILE")
            self.loaded = model
            self.tokenizer = model.tokenizer
            self.engine = LLMEngine(model.model, model.tokenizer, config)
        except BaseException:
            self.close()
            raise
        self._ids = itertools.count()

    def close(self) -> None:
        """Stop the other ranks of a parallel LLM (nothing to do on one device)."""
        if self.ranks is not None:
            self.ranks.close()

    def __enter__(self) -> LLM:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def get_tokenizer(self) -> Tokenizer:
        return self.tokenizer

    def stream(self, prompt_ids: list[int], params: SamplingParams) -> Iterator[GenerationChunk]:
        """One prompt's completion as it is generated (what the engine adds each step)."""
        request_id = self.engine.add_request(self.engine.check_request(prompt_ids, params))
        try:
            while self.engine.has_unfinished():
                for output in self.engine.step():
                    token = output.tokens[0] if output.tokens else None
                    yield GenerationChunk(output.text, token and token.id, token and token.logprob,
                                          output.finish_reason, output.stop)
                    if output.finished:
                        return
        finally:
            self.engine.abort(request_id)

    def generate(self, prompts: Prompt | Sequence[Prompt],
                 sampling_params: SamplingParams | Sequence[SamplingParams] | None = None, *,
                 add_bos: bool = False, use_tqdm: bool = False) -> list[RequestOutput]:
        """Complete every prompt (text, token ids, or vLLM's prompt dicts); one RequestOutput per prompt,
        in order, with sampling_params.n completions each. Every prompt and parameter set is checked
        before anything runs. use_tqdm is accepted for vLLM's callers and ignored."""
        prompts = _prompt_list(prompts)
        texts = [prompt_text(p) for p in prompts]
        ids = [self._prompt_ids(p, add_bos) for p in prompts]
        if sampling_params is None or isinstance(sampling_params, SamplingParams):
            sampling_params = [sampling_params or SamplingParams()] * len(ids)
        if len(sampling_params) != len(ids):
            raise RequestError(f"{len(ids)} prompts but {len(sampling_params)} sampling parameter sets")
        return self._run(texts, ids, list(sampling_params))

    def chat(self, messages: Sequence[Mapping] | Sequence[Sequence[Mapping]],
             sampling_params: SamplingParams | Sequence[SamplingParams] | None = None, *,
             add_generation_prompt: bool = True, use_tqdm: bool = False) -> list[RequestOutput]:
        """Reply to a conversation ([{"role", "content"}, ...]) or a list of them, in the Nemotron chat
        format (tokenizer.render_chat); each reply ends where the model starts the next turn."""
        conversations = [messages] if messages and isinstance(messages[0], Mapping) else list(messages)
        if sampling_params is None or isinstance(sampling_params, SamplingParams):
            sampling_params = [sampling_params or SamplingParams()] * len(conversations)
        if len(sampling_params) != len(conversations):
            raise NemotronError(f"{len(conversations)} conversations but {len(sampling_params)} sampling "
                                "parameter sets")
        texts = [render_chat(c, add_generation_prompt) for c in conversations]
        params = [dataclasses.replace(p, stop=[*p.stop, *CHAT_STOP_STRINGS]) for p in sampling_params]
        return self._run(texts, [self.tokenizer.encode(t) for t in texts], params)

    def _prompt_ids(self, prompt: Prompt, add_bos: bool) -> list[int]:
        return prompt_token_ids(self.tokenizer, prompt, add_bos)

    def _run(self, texts: list[str | None], prompt_ids: list[list[int]],
             params: list[SamplingParams]) -> list[RequestOutput]:
        # Every choice is checked before any runs: a bad prompt leaves no half-submitted batch behind.
        checked = [(i, j, request) for i, (ids, p) in enumerate(zip(prompt_ids, params))
                   for j, request in enumerate(check_choices(self.engine, ids, p))]
        builders = [[CompletionBuilder(j, p, self.tokenizer.eos_id, self.tokenizer) for j in range(p.n)]
                    for p in params]
        prompt_logprobs: list = [None] * len(prompt_ids)
        owners: dict[str, tuple[int, int]] = {}
        try:
            for i, j, request in checked:
                owners[self.engine.add_request(request)] = (i, j)
            while self.engine.has_unfinished():
                for output in self.engine.step():
                    i, j = owners[output.request_id]
                    builders[i][j].add(output)
                    if output.prompt_logprobs is not None and j == 0:
                        prompt_logprobs[i] = output.prompt_logprobs
        finally:
            for request_id in owners:  # an interrupted batch (Ctrl-C) frees its KV blocks
                self.engine.abort(request_id)
        results = []
        for i, (text, ids) in enumerate(zip(texts, prompt_ids)):
            outputs = [b.output() for b in builders[i]]
            results.append(RequestOutput(str(next(self._ids)), text, ids,
                                         prompt_logprob_dicts(prompt_logprobs[i], self.tokenizer), outputs,
                                         finished=True, num_cached_tokens=builders[i][0].last.num_cached_tokens))
        return results


def prompt_token_ids(tokenizer: Tokenizer, prompt: Prompt, add_bos: bool = False) -> list[int]:
    """A prompt's token ids: text (encoded), token ids, or vLLM's {"prompt": ...} / {"prompt_token_ids": ...}."""
    if isinstance(prompt, Mapping):
        if "prompt_token_ids" in prompt:
            return list(prompt["prompt_token_ids"])
        if "prompt" not in prompt:
            raise NemotronError(f"a prompt dict holds 'prompt' or 'prompt_token_ids', got {sorted(prompt)}")
        prompt = prompt["prompt"]
    return tokenizer.encode(prompt, add_bos=add_bos) if isinstance(prompt, str) else list(prompt)


def prompt_text(prompt: Prompt) -> str | None:
    """The prompt's text as RequestOutput.prompt reports it (None when given as token ids)."""
    return prompt if isinstance(prompt, str) else prompt.get("prompt") if isinstance(prompt, Mapping) else None


def check_choices(engine: LLMEngine, prompt_ids: list[int], params: SamplingParams) -> list[EngineRequest]:
    """The params.n completions of one prompt as checked engine requests: completion j seeded with
    derive_seed(seed, j); the prompt is scored once, by the first."""
    first = engine.check_request(prompt_ids, dataclasses.replace(params, n=1, best_of=None))
    # The others differ only in their seed and in not scoring the prompt: what the first passed, they pass.
    return [first] + [dataclasses.replace(first, params=dataclasses.replace(
        first.params, seed=derive_seed(params.seed, j), prompt_logprobs=None)) for j in range(1, params.n)]


def _prompt_list(prompts: Prompt | Sequence[Prompt]) -> list[Prompt]:
    if isinstance(prompts, (str, Mapping)) or (prompts and isinstance(prompts[0], int)):
        return [prompts]
    return list(prompts)


def _engine_config(config: EngineConfig, tp: int, pp: int, **fields) -> EngineConfig:
    changes = {name: value for name, value in fields.items() if value is not None}
    if (tp, pp) != (1, 1):
        changes["parallel"] = dataclasses.replace(config.parallel, tensor_parallel_size=tp,
                                                  pipeline_parallel_size=pp)
    return dataclasses.replace(config, **changes) if changes else config
