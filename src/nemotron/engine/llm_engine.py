"""The inference engine: requests in, streamed outputs out. One step = schedule -> run -> postprocess."""
from __future__ import annotations

import itertools
import operator
import time
from dataclasses import dataclass, field

import torch

from nemotron.engine.block_manager import BlockManager
from nemotron.engine.cpu_trace import TracedDecode
from nemotron.engine.cuda_graphs import DecodeGraphs
from nemotron.engine.mamba_state import PREFIX_CACHING_OFF, AttentionLayers, MambaStatePool, StateSlots
from nemotron.engine.model_runner import PROMPT_ROWS, ModelRunner, SampledToken
from nemotron.engine.output import OutputTracker, Token
from nemotron.engine.paged_cache import ATTENTION_BACKENDS, PagedKVCache
from nemotron.engine.sampling import SamplingParams
from nemotron.engine.scheduler import Scheduler, SchedulerConfig
from nemotron.engine.sequence import Sequence
from nemotron.errors import ConfigError, NemotronError
from nemotron.memory.planner import prompt_logprobs_workspace_bytes, sampling_workspace_bytes
from nemotron.model.config import ModelConfig
from nemotron.model.nemotron import NemotronForCausalLM, fuse_qkv
from nemotron.model.nemotron_h import NemotronHForCausalLM
from nemotron.model.nemotron_h_config import NO_MODEL_PARALLEL, NemotronHConfig
from nemotron.parallel.runtime import ParallelConfig, channel_for
from nemotron.quant.cpu import use_cpu_kernels
from nemotron.tokenizer import Tokenizer


def make_runner(model: NemotronForCausalLM | NemotronHForCausalLM, config: EngineConfig, eos_id: int,
                channel=None) -> ModelRunner:
    """The model side of the engine, the same on every rank: the KV pool (this rank's heads of its
    stage's layers, sized from its free memory; all ranks take the smallest pool, as rank 0's block
    ids address every one) and the runner. `channel`: nemotron.parallel.runtime.StepChannel.
    A hybrid (Nemotron-H) model's pool is its attention layers' K/V plus the Mamba state slots."""
    hybrid = isinstance(model, NemotronHForCausalLM)
    if hybrid:
        if channel is not None or config.parallel.world_size > 1:
            raise NemotronError(NO_MODEL_PARALLEL)
        kv_config = AttentionLayers.of(model.config)
        norm = model.model.norm_f.weight
    else:
        model = fuse_qkv(model)  # in place: one QKV matmul per layer (state dict names change)
        if config.cpu_kernels and channel is None:  # (a split model's linears carry its collectives: left as they are)
            use_cpu_kernels(model, config.cpu_fp32_kernels)  # in place: linear layers in their kernels' layouts
        kv_config = model.config  # a sharded model's config is its rank's view: its stage's layers, its heads
        norm = model.model.layers[0].input_layernorm.weight  # every stage has layers; norms are never quantized
    device, dtype = norm.device, norm.dtype
    num_slots = _state_slots(model.config, config, device) if hybrid else 0
    state_bytes = num_slots * MambaStatePool.bytes_per_slot(model.config) if hybrid else 0
    num_blocks = config.num_blocks or _blocks_from_memory(
        kv_config, config, device, dtype, state_bytes + _step_workspace(model.config.vocab_size, config, device, dtype))
    if channel is not None:
        num_blocks = channel.ready(num_blocks)
    pipelined = channel is not None and channel.layout.pp > 1  # micro-batches: no shared decode lanes
    kv_cache = PagedKVCache(kv_config, num_blocks, config.block_size, dtype, device, config.attention_backend,
                            decode_workspace=config.decode_workspace and not pipelined and kv_config.num_layers > 0)
    if hybrid:
        kv_cache.states = MambaStatePool(model.config, num_slots, device)
    elif kv_cache.backend == "triton" and device.type == "cuda":  # the GPU's Triton kernels: norms, rotary,
        from nemotron.engine.triton_activation import use_triton_activation  # squared ReLU too
        from nemotron.engine.triton_norm import use_triton_norms
        from nemotron.engine.triton_rotary import use_triton_rotary

        use_triton_activation(use_triton_rotary(use_triton_norms(model)))
    return ModelRunner(model, kv_cache, eos_id, channel)


def _step_workspace(vocab_size: int, config: EngineConfig, device: torch.device, dtype: torch.dtype) -> int:
    """GPU memory a step takes beside the KV pool that grows with the vocabulary: the logits of the
    prompt tokens it scores (prompt log-probabilities), at most the scheduler's max_scored_tokens
    of them, and the sampling of max_num_seqs decoding rows (their logits, the sampler's fp32 copies
    and penalty state). On CPU the pool is cpu_kv_cache_bytes as configured, so nothing is taken from it."""
    if device.type != "cuda":
        return 0
    rows = min(config.scheduler.max_scored_tokens, config.max_num_batched_tokens)
    return (prompt_logprobs_workspace_bytes(vocab_size, dtype.itemsize, rows, PROMPT_ROWS)
            + sampling_workspace_bytes(vocab_size, dtype.itemsize, config.max_num_seqs))


def _memory_budget(config: EngineConfig, device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * config.gpu_memory_fraction)
    return config.cpu_kv_cache_bytes


def _blocks_from_memory(kv_config: ModelConfig | AttentionLayers, config: EngineConfig, device: torch.device,
                        dtype: torch.dtype, reserved: int = 0) -> int:
    """KV blocks that fit in the memory budget less `reserved` bytes (a hybrid model's state slots)."""
    per_block = PagedKVCache.bytes_per_block(kv_config, config.block_size, dtype)
    budget = _memory_budget(config, device) - reserved
    # No point in more blocks than max_num_seqs full-context sequences can use.
    context = min(kv_config.max_position_embeddings, config.max_model_len or kv_config.max_position_embeddings)
    ceiling = config.max_num_seqs * -(-context // config.block_size)
    if per_block == 0:  # a hybrid stack without attention layers: blocks only count tokens
        return ceiling
    return max(1, min(budget // per_block, ceiling))


def _state_slots(model_config: NemotronHConfig, config: EngineConfig, device: torch.device) -> int:
    """Mamba state slots, one per running sequence: max_num_seqs of them, or as many as half the
    memory budget holds when that is fewer (the other half is for the attention layers' K/V)."""
    per_slot = MambaStatePool.bytes_per_slot(model_config)
    if per_slot == 0:
        return config.max_num_seqs
    return max(1, min(config.max_num_seqs, _memory_budget(config, device) // 2 // per_slot))


class RequestError(NemotronError, ValueError):
    """A request the engine cannot serve (empty, too long for the context or the KV pool)."""


@dataclass(slots=True, frozen=True)
class EngineConfig:
    block_size: int = 16
    num_blocks: int | None = None  # None: sized from memory (below)
    gpu_memory_fraction: float = 0.9  # of the memory free after loading the weights
    cpu_kv_cache_bytes: int = 2 * 1024**3
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 2048
    enable_prefix_caching: bool = True
    attention_backend: str = "auto"  # decode attention: "triton" kernel on GPUs (and Triton norms), "torch" SDPA
    cuda_graphs: bool = True  # replay decode steps from CUDA graphs (GPU with the triton backend only)
    cpu_decode_trace: bool = True  # CPU: replay steps of up to 8 decoding sequences from a trace (engine.cpu_trace)
    decode_workspace: bool = True  # torch backend: decode from contiguous per-sequence K/V lanes, not block gathers
    parallel: ParallelConfig = ParallelConfig()  # tensor x pipeline parallel ranks (started by nemotron.parallel.launch)
    cpu_kernels: bool = True  # bf16 on CPU: prepacked oneDNN, int8 / int4 kernels (nemotron.quant.cpu)
    cpu_fp32_kernels: bool = False  # fp32 on CPU: prepacked oneDNN too (~1.5x batch-1 decode; not bit for bit F.linear)
    max_model_len: int | None = None  # context served (prompt + generated); None: the model's own

    def __post_init__(self) -> None:
        if self.attention_backend not in ATTENTION_BACKENDS:
            raise ConfigError(f"attention_backend must be one of {ATTENTION_BACKENDS}, got {self.attention_backend!r}")
        if self.block_size < 1 or (self.num_blocks is not None and self.num_blocks < 1):
            raise ConfigError("block_size and num_blocks must be >= 1")
        if not 0 < self.gpu_memory_fraction <= 1:
            raise ConfigError(f"gpu_memory_fraction must be in (0, 1], got {self.gpu_memory_fraction}")
        if self.max_model_len is not None and self.max_model_len < 2:
            raise ConfigError(f"max_model_len must be >= 2, got {self.max_model_len}")

    @property
    def scheduler(self) -> SchedulerConfig:
        return SchedulerConfig(self.max_num_seqs, self.max_num_batched_tokens)


@dataclass(slots=True, frozen=True)
class EngineRequest:
    """A request `LLMEngine.check_request` accepted: it fits the model's vocabulary and context and
    the KV pool, so adding it cannot fail. Checked once, wherever it comes from."""

    prompt_ids: list[int]
    params: SamplingParams
    max_tokens: int  # params.max_tokens, clipped to the context left


@dataclass(slots=True)
class StepOutput:
    """What one step added to a request; `finished` on the last one."""

    request_id: str
    text: str  # newly shown text
    tokens: list[Token]  # generated in this step (a stop token included)
    shown: list[Token] = field(default_factory=list)  # the tokens whose text is now shown (the same objects)
    finished: bool = False
    finish_reason: str | None = None
    stop: str | int | None = None
    num_prompt_tokens: int = 0
    num_output_tokens: int = 0
    num_cached_tokens: int = 0
    prompt_logprobs: list[Token | None] | None = None  # on the first output of a request that asked

    @property
    def token_ids(self) -> list[int]:
        return [t.id for t in self.tokens]


@dataclass(slots=True)
class _Request:
    seq: Sequence
    tracker: OutputTracker
    sent_prompt_logprobs: bool = False
    outputs: list[StepOutput] = field(default_factory=list)


def _integer_ids(ids) -> list[int]:
    """Token ids as plain ints: Python, numpy and one-element torch integers are; a float (an id array
    of the wrong dtype, which would fail deep in the tokenizer or torch) or a bool is a RequestError."""
    out = []
    for token in ids:
        try:
            if isinstance(token, bool):
                raise TypeError
            out.append(operator.index(token))
        except TypeError:
            raise RequestError(f"prompt token ids must be integers, got {token!r}") from None
    return out


class LLMEngine:
    def __init__(self, model: NemotronForCausalLM | NemotronHForCausalLM, tokenizer: Tokenizer,
                 config: EngineConfig = EngineConfig()) -> None:
        self.tokenizer = tokenizer
        self.config = config
        self.context_len = model.config.max_position_embeddings
        if config.max_model_len is not None:
            if config.max_model_len > self.context_len:
                raise NemotronError(f"max_model_len {config.max_model_len} exceeds the model's context of "
                                    f"{self.context_len} tokens")
            self.context_len = config.max_model_len
        channel = channel_for(config.parallel)
        self.runner = make_runner(model, config, tokenizer.eos_id, channel)
        self.model = self.runner.model
        self.kv_cache = self.runner.kv_cache
        states = self.kv_cache.states  # a hybrid model's Mamba state slots, else None
        # Why prefix caching is off although asked for (None when it is as configured).
        self.prefix_caching_off_reason = PREFIX_CACHING_OFF if states is not None and config.enable_prefix_caching \
            else None
        prefix_caching = config.enable_prefix_caching and states is None
        self.blocks = BlockManager(self.kv_cache.num_blocks, config.block_size, prefix_caching)
        self.state_slots = StateSlots(states.num_slots) if states is not None else None
        self.scheduler = Scheduler(config.scheduler, self.blocks, self.state_slots)
        device = self.kv_cache.keys.device
        if (config.cuda_graphs and device.type == "cuda" and self.kv_cache.backend == "triton" and channel is None
                and states is None):  # (graphs capture no Mamba state updates: hybrid models decode eagerly)
            max_blocks = -(-self.context_len // config.block_size)
            self.runner.graphs = DecodeGraphs(self.model, self.kv_cache, min(config.max_num_seqs, 256), max_blocks)
        if (config.cpu_decode_trace and device.type == "cpu" and self.kv_cache.workspace is not None
                and channel is None and states is None):  # (as the CUDA graphs: one process, no Mamba state)
            self.runner.traced = TracedDecode(self.model.model, self.kv_cache)
        self._requests: dict[str, _Request] = {}
        self._ids = itertools.count()

    # ---- requests ----------------------------------------------------------------------------
    def check_request(self, prompt_ids: list[int], params: SamplingParams) -> EngineRequest:
        """The one check of a request: RequestError for one this engine can never serve. Reads only
        fixed facts, so any thread may call it (servers do, to answer 400 before streaming)."""
        vocab = self.model.config.vocab_size
        if params.n != 1:
            raise RequestError(f"n={params.n}: an engine request is one sequence (LLM.generate and the servers "
                               "run n of them)")
        if not prompt_ids:
            raise RequestError("the prompt is empty; give at least one token")
        prompt_ids = _integer_ids(prompt_ids)
        scoring = params.max_tokens == 0  # a prompt that fills the context may still be scored (echo, logprobs)
        if len(prompt_ids) > self.context_len or (len(prompt_ids) == self.context_len and not scoring):
            raise RequestError(f"the prompt has {len(prompt_ids)} tokens; the model's context is {self.context_len}")
        if max(prompt_ids) >= vocab or min(prompt_ids) < 0:
            raise RequestError(f"prompt token ids must be in [0, {vocab})")
        if params.stop_token_ids and max(params.stop_token_ids) >= vocab:
            raise RequestError(f"stop_token_ids must be in [0, {vocab}), got {max(params.stop_token_ids)}")
        for name in ("logprobs", "prompt_logprobs"):
            if (getattr(params, name) or 0) > vocab:
                raise RequestError(f"{name} must be at most the vocabulary's {vocab} (or -1 for all of it), "
                                   f"got {getattr(params, name)}")
        left = self.context_len - len(prompt_ids)
        max_tokens = left if params.max_tokens is None else min(params.max_tokens, left)
        capacity = self.blocks.num_blocks * self.blocks.block_size
        if len(prompt_ids) + max_tokens > capacity:
            raise RequestError(f"prompt ({len(prompt_ids)}) + max new tokens ({max_tokens}) exceed the KV cache "
                               f"of {capacity} tokens")
        return EngineRequest(list(prompt_ids), params, max_tokens)

    def add_request(self, request: EngineRequest, request_id: str | None = None) -> str:
        """Queue a checked request (check_request); returns its id."""
        request_id = request_id if request_id is not None else f"req-{next(self._ids)}"
        if request_id in self._requests:
            raise RequestError(f"request id {request_id!r} is already in use")
        seq = Sequence(request_id, request.prompt_ids, request.params)
        tracker = OutputTracker(self.tokenizer, request.params, request.max_tokens, seq.prompt_ids)
        self._requests[request_id] = _Request(seq, tracker)
        if request.max_tokens == 0 and request.params.prompt_logprobs is None:  # nothing to compute
            self._finish(self._requests[request_id], "length", None)
            return request_id
        self.scheduler.add(seq)
        return request_id

    def abort(self, request_id: str) -> None:
        request = self._requests.pop(request_id, None)
        if request is not None and not request.seq.is_finished:
            self.scheduler.finish(request.seq)

    def has_unfinished(self) -> bool:
        return self.scheduler.has_work() or any(r.outputs for r in self._requests.values())

    @property
    def num_requests(self) -> int:
        return len(self._requests)

    # ---- the step ----------------------------------------------------------------------------
    def step(self) -> list[StepOutput]:
        chunks = self.scheduler.schedule()
        sampled = self.runner.run(chunks) if chunks else []
        for chunk in chunks:
            chunk.seq.num_computed = chunk.start + chunk.num_tokens
            self.scheduler.register_computed_blocks(chunk.seq)
        for token in sampled:
            self._postprocess(token)
        self._finish_scoring_requests(chunks)
        return self._drain_outputs()

    def _postprocess(self, sampled: SampledToken) -> None:
        seq = sampled.chunk.seq
        request = self._requests[seq.request_id]
        seq.token_ids.append(sampled.token.id)
        outcome = request.tracker.on_token(sampled.token)
        output = self._new_output(request, outcome.text, [sampled.token], outcome.shown)
        if outcome.finish_reason:
            self._finish(request, outcome.finish_reason, outcome.stop, output)

    def _finish_scoring_requests(self, chunks) -> None:
        """Requests with max_tokens 0 end once their prompt is scored."""
        for chunk in chunks:
            request = self._requests.get(chunk.seq.request_id)
            if request and request.tracker.max_new_tokens == 0 and chunk.seq.num_computed == chunk.seq.num_tokens:
                self._finish(request, "length", None)

    def _new_output(self, request: _Request, text: str = "", tokens: list[Token] | None = None,
                    shown: list[Token] | None = None) -> StepOutput:
        seq = request.seq
        output = StepOutput(seq.request_id, text, tokens or [], shown or [], num_prompt_tokens=seq.num_prompt_tokens,
                            num_output_tokens=seq.num_output_tokens, num_cached_tokens=seq.num_cached_prompt_tokens)
        if seq.params.prompt_logprobs is not None and not request.sent_prompt_logprobs:
            output.prompt_logprobs = seq.prompt_logprobs or [None]  # a one-token prompt has nothing to score
            request.sent_prompt_logprobs = True
        request.outputs.append(output)
        return output

    def _finish(self, request: _Request, reason: str, stop: str | int | None,
                output: StepOutput | None = None) -> None:
        if output is None:
            output = self._new_output(request)
        output.finished, output.finish_reason, output.stop = True, reason, stop
        self.scheduler.finish(request.seq)

    def _drain_outputs(self) -> list[StepOutput]:
        outputs: list[StepOutput] = []
        for request_id in list(self._requests):
            request = self._requests[request_id]
            outputs += request.outputs
            request.outputs = []
            if request.seq.is_finished:
                del self._requests[request_id]
        return outputs

    # ---- metrics -----------------------------------------------------------------------------
    def stats(self) -> dict[str, float]:
        return {
            "requests_waiting": len(self.scheduler.waiting),
            "requests_running": len(self.scheduler.running),
            "kv_blocks_total": self.blocks.num_blocks,
            "kv_blocks_free": self.blocks.num_free_blocks,
            "kv_blocks_used": self.blocks.num_blocks - self.blocks.num_free_blocks,
            "prefix_cache_hit_tokens": self.blocks.prefix_hits,
            "prefix_cache_query_tokens": self.blocks.prefix_queries,
            "preemptions": self.scheduler.num_preemptions,
            **({} if self.state_slots is None else {
                "state_slots_total": self.state_slots.num_slots,
                "state_slots_free": self.state_slots.num_free,
            }),
            "time": time.time(),
        }
