"""`LLM(model).generate(prompts, params)`: the engine for offline batches."""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from nemotron.checkpoint.load import LoadedModel, load_model
from nemotron.engine.generate import GenerationChunk
from nemotron.engine.llm_engine import EngineConfig, LLMEngine, RequestOutput
from nemotron.engine.sampling import SamplingParams
from nemotron.errors import NemotronError
from nemotron.model.nemotron_h import CAUSAL_LMS


@dataclass(slots=True)
class Completion:
    prompt_ids: list[int]
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)
    prompt_logprobs: list[float | None] | None = None
    finish_reason: str | None = None
    stop: str | int | None = None
    num_cached_tokens: int = 0

    def add(self, output: RequestOutput) -> None:
        self.text += output.text
        self.token_ids += output.token_ids
        self.logprobs += output.logprobs
        self.top_logprobs += output.top_logprobs
        if output.prompt_logprobs is not None:
            self.prompt_logprobs = output.prompt_logprobs
        if output.finished:
            self.finish_reason, self.stop = output.finish_reason, output.stop
            self.num_cached_tokens = output.num_cached_tokens


class LLM:
    """tensor_parallel_size / pipeline_parallel_size > 1: this process becomes rank 0 of that many
    ranks on this machine (one GPU each, or CPU processes), each loading its part of the model named
    by `model` (a path or preset); close() (or `with`) stops them. A LoadedModel with a parallel
    config is rank 0's part of a run started by nemotron.parallel.launch."""

    def __init__(self, model: str | Path | LoadedModel, config: EngineConfig = EngineConfig(), *,
                 dtype: str | None = None, device: str | None = None, tensor_parallel_size: int = 1,
                 pipeline_parallel_size: int = 1, trust_pickle: bool = False) -> None:
        self.ranks = None
        if (tensor_parallel_size, pipeline_parallel_size) != (1, 1):
            config = dataclasses.replace(config, parallel=dataclasses.replace(
                config.parallel, tensor_parallel_size=tensor_parallel_size,
                pipeline_parallel_size=pipeline_parallel_size))
        if config.parallel.world_size > 1 and not isinstance(model, LoadedModel):  # else: rank 0's part, ranks started
            from nemotron.parallel.launch import RankOptions, start_local

            device = device or ("cuda" if torch.cuda.is_available() else "cpu")
            self.ranks, model = start_local(RankOptions(str(model), config, dtype, torch.device(device).type,
                                                        trust_pickle))
        elif not isinstance(model, LoadedModel):
            device = device or ("cuda" if torch.cuda.is_available() else "cpu")
            model = load_model(model, dtype=dtype, device=device, trust_pickle=trust_pickle)
        try:
            if not isinstance(model.model, CAUSAL_LMS):
                raise NemotronError(f"{model.source.spec} is a reward model; it scores text, it does not generate")
            if model.tokenizer is None:
                raise NemotronError(f"{model.source.spec} comes without a tokenizer")
            self.loaded = model
            self.tokenizer = model.tokenizer
            self.engine = LLMEngine(model.model, model.tokenizer, config)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop the other ranks of a parallel LLM (nothing to do on one device)."""
        if self.ranks is not None:
            self.ranks.close()

    def __enter__(self) -> LLM:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def stream(self, prompt_ids: list[int], params: SamplingParams) -> Iterator[GenerationChunk]:
        """One prompt's completion as it is generated (what the engine adds each step)."""
        request_id = self.engine.add_request(prompt_ids, params)
        try:
            while self.engine.has_unfinished():
                for output in self.engine.step():
                    yield GenerationChunk(output.text, output.token_ids[0] if output.token_ids else None,
                                          output.logprobs[0] if output.logprobs else None, output.finish_reason,
                                          output.stop)
                    if output.finished:
                        return
        finally:
            self.engine.abort(request_id)

    def generate(self, prompts: str | list[str] | list[list[int]],
                 params: SamplingParams | list[SamplingParams] | None = None,
                 add_bos: bool = False) -> list[Completion]:
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        prompt_ids = [p if isinstance(p, list) else self.tokenizer.encode(p, add_bos=add_bos) for p in prompts]
        if params is None or isinstance(params, SamplingParams):
            params = [params or SamplingParams()] * len(prompt_ids)
        if len(params) != len(prompt_ids):
            raise NemotronError(f"{len(prompt_ids)} prompts but {len(params)} sampling parameter sets")
        completions: dict[str, Completion] = {}
        try:
            for ids, p in zip(prompt_ids, params):
                completions[self.engine.add_request(ids, p)] = Completion(ids)
        except NemotronError:  # all or nothing: a bad prompt leaves no half-submitted batch behind
            for request_id in completions:
                self.engine.abort(request_id)
            raise
        while self.engine.has_unfinished():
            for output in self.engine.step():
                completions[output.request_id].add(output)
        return list(completions.values())
