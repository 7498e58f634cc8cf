"""Memory needed to serve a model: weights, KV cache, activations and runtime overhead, in bytes.

    weights      Σ parameters × bits / 8 (see Precision; a checkpoint directory: its real tensor bytes)
    KV cache     batch × context × 2 × layers × KV heads × head_dim × 2 bytes (the engine keeps K/V in 16 bit)
    activations  T × (2·hidden + 2·ffn) × 2 bytes, T = min(batch × context, 2048): the largest live set of
                 one forward step (residual, normed input, up-projection and its squared ReLU) over one
                 prefill chunk of the engine's default 2,048 tokens; plus batch × vocab × 33 bytes for the
                 sampled rows: their 16-bit logits, the sampler's six fp32 working copies and its
                 penalty state (sampling_workspace_bytes; the engine reserves it for max_num_seqs rows)
    prompt logprobs  512 × vocab × 2 + 64 × vocab × 8 bytes: a step that scores prompt tokens (prompt
                 log-probabilities, OpenAI echo) holds logits for up to 512 of them, 64 at a time through
                 an fp32 log-softmax (prompt_logprobs_workspace_bytes; the engine reserves the same)
    overhead     0.5 GB per GPU: CUDA context, cuBLAS workspace, allocator slack
    total        the sum

Nemotron-H (hybrid): the KV cache counts the attention layers only, and each Mamba-2 layer adds a
state of constant size per sequence, whatever the context: batch × Mamba layers × ((conv kernel − 1)
× conv channels + heads × head_dim × state size) × 4 bytes (fp32). Activations use the widest
projection (MLP or Mamba in_proj) for the FFN term.

Split over GPUs: tensor parallelism (TP) divides every linear layer, the embedding and the LM head
by TP (norms are replicated) and the KV heads by TP (a KV head is replicated when TP exceeds their
number); pipeline parallelism (PP) gives each stage a contiguous run of layers, the embedding to the
first stage and the final norm and head to the last. The per-GPU figure is the busiest GPU's.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path

from nemotron.errors import ConfigError
from nemotron.memory.gpus import CATALOG, GPU, GPUS_PER_NODE, MAX_NODES
from nemotron.model.config import QUANTIZATION_SCHEMES, ModelConfig
from nemotron.model.nemotron_h_config import ATTENTION, MAMBA, NemotronHConfig

RUNTIME_OVERHEAD_BYTES = 500_000_000  # per GPU (MISSION.md: "about 0.5 GB of runtime overhead")
PREFILL_CHUNK_TOKENS = 2048  # the engine's EngineConfig.max_num_batched_tokens
SCORED_TOKENS = 512  # the engine's default SchedulerConfig.max_scored_tokens: prompt positions scored in one step
SCORED_CHUNK_ROWS = 64  # the engine's model_runner.PROMPT_ROWS (imported there): scored rows through the fp32 log-softmax at once
KV_BYTES = ACTIVATION_BYTES = 2

DTYPE_BITS = {"fp32": 32, "bf16": 16, "fp16": 16, "fp8": 8}
# Nominal bits per weight of the published planning table (MISSION.md). llama.cpp's effective figures
# run a little higher because of their block scales (Q8_0 8.5, Q6_K 6.56, Q4_K_M ~4.8).
TABLE_BITS = {"Q4_K_M": 4.5, "Q5_K_M": 5.5, "Q6_K": 6.5, "Q8_0": 8.0, "FP16": 16.0, "BF16": 16.0}
_SAFETENSORS_ITEMSIZE = {"F64": 8, "I64": 8, "F32": 4, "I32": 4, "BF16": 2, "F16": 2, "I16": 2,
                         "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1, "BOOL": 1}


@dataclass(slots=True, frozen=True)
class Precision:
    """Weights at `dtype`, except what `quant` overrides: a planning-table name (every weight at its
    bits), an engine scheme int8 / int4 / fp8 (decoder-layer linear weights as `nemotron quantize`
    stores them, scales included; with `head`, as by default, the LM head in int8 as well), or a
    number of bits per weight (every weight)."""

    dtype: str = "bf16"
    quant: str | None = None
    head: bool = True  # engine schemes: the LM head quantized (int8) too

    def __post_init__(self) -> None:
        if self.dtype not in DTYPE_BITS:
            raise ConfigError(f"unknown dtype {self.dtype!r}; use one of {', '.join(DTYPE_BITS)}")
        if self.quant is not None and self.table_bits is None and self.quant not in QUANTIZATION_SCHEMES:
            raise ConfigError(f"unknown quantization {self.quant!r}; use a planning-table name "
                              f"({', '.join(TABLE_BITS)}), an engine scheme ({', '.join(QUANTIZATION_SCHEMES)}) "
                              f"or bits per weight such as 5.5")

    @property
    def table_bits(self) -> float | None:
        """Bits of every weight when `quant` is a table name or a number."""
        if self.quant is None:
            return None
        if self.quant.upper() in TABLE_BITS:
            return TABLE_BITS[self.quant.upper()]
        if re.fullmatch(r"\d+(\.\d+)?", self.quant) and 0 < float(self.quant) <= 32:
            return float(self.quant)
        return None

    @property
    def label(self) -> str:
        if self.quant is None:
            return f"{self.dtype} ({DTYPE_BITS[self.dtype]} bits per weight)"
        if self.table_bits is not None:
            return f"{self.quant} ({self.table_bits:g} bits per weight, every weight)"
        head = " and an int8 LM head" if self.head else ""
        return f"{self.quant} decoder-layer weights{head}, the rest {self.dtype}"

    @property
    def needs_fp8(self) -> bool:
        return self.table_bits is None and "fp8" in (self.dtype, self.quant)

    @property
    def needs_bf16(self) -> bool:
        return self.table_bits is None and self.dtype == "bf16"

    def linear_bytes(self, out_features: int, in_features: int) -> float:
        if self.quant in QUANTIZATION_SCHEMES:
            from nemotron.quant.linear import SCHEMES

            return _module_bytes(SCHEMES[self.quant], in_features, out_features)
        return self.other_bytes(out_features * in_features)

    def head_bytes(self, vocab_size: int, hidden_size: int) -> float:
        """A language model's LM head: int8 as `nemotron quantize` stores it under an engine scheme."""
        if self.quant in QUANTIZATION_SCHEMES and self.head:
            from nemotron.quant.transform import HEAD_CLASS

            return _module_bytes(HEAD_CLASS, hidden_size, vocab_size)
        return self.other_bytes(vocab_size * hidden_size)

    def other_bytes(self, count: int) -> float:
        bits = self.table_bits if self.table_bits is not None else DTYPE_BITS[self.dtype]
        return count * bits / 8


def _module_bytes(cls, in_features: int, out_features: int) -> int:
    """Exact: the tensors a quantized module of class `cls` holds (weights and scales)."""
    specs = cls.tensor_specs(in_features, out_features).values()
    return sum(math.prod(shape) * dtype.itemsize for shape, dtype in specs)


@dataclass(slots=True, frozen=True)
class Part:
    split: float  # bytes divided among tensor-parallel ranks
    replicated: float = 0.0  # bytes every rank holds (norms)
    kv_split: float = 0.0  # k/v projections: divided among at most kv_heads ranks (replicated beyond)
    kv_heads: int = 1

    def per_rank(self, tp: int) -> float:
        return self.split / tp + self.kv_split / min(tp, self.kv_heads) + self.replicated

    @property
    def total(self) -> float:
        return self.split + self.kv_split + self.replicated


@dataclass(slots=True, frozen=True)
class WeightBytes:
    layers: tuple[Part, ...]  # one per decoder layer
    first: Part  # embedding: first pipeline stage
    last: Part  # final norm, LM head, reward head: last pipeline stage
    source: str  # how the figure was obtained

    @property
    def total(self) -> float:
        return sum(p.total for p in (*self.layers, self.first, self.last))

    @classmethod
    def from_config(cls, config: ModelConfig | NemotronHConfig, precision: Precision) -> WeightBytes:
        if isinstance(config, NemotronHConfig):
            return cls._hybrid(config, precision)
        h, d, f, v = config.hidden_size, config.head_dim, config.intermediate_size, config.vocab_size
        shapes = [(config.num_heads * d, h), (h, config.num_heads * d), (f, h), (h, f)]  # q, o, up, down: (out, in)
        kv = 2 * precision.linear_bytes(config.num_kv_heads * d, h)
        layer = Part(sum(precision.linear_bytes(n, k) for n, k in shapes), precision.other_bytes(4 * h), kv,
                     config.num_kv_heads)
        head = (precision.other_bytes(config.num_reward_attributes * (h + int(config.reward_head_bias)))
                if config.is_reward_model else precision.head_bytes(v, h))
        return cls((layer,) * config.num_layers, Part(precision.other_bytes(v * h)),
                   Part(head, precision.other_bytes(2 * h)), precision.label)

    @classmethod
    def _hybrid(cls, config: NemotronHConfig, precision: Precision) -> WeightBytes:
        if precision.quant in QUANTIZATION_SCHEMES:
            raise ConfigError(f"--quant {precision.quant} is an engine scheme for Nemotron-4 layers; "
                              f"Nemotron-H takes a planning-table name or bits per weight")
        h, v = config.hidden_size, config.vocab_size
        layers = tuple(Part(precision.other_bytes(config.layer_parameters(kind) - h), precision.other_bytes(h))
                       for kind in config.layer_types)  # the pre-norm replicated, the mixer split
        return cls(layers, Part(precision.other_bytes(v * h)),
                   Part(precision.other_bytes(v * h), precision.other_bytes(h)), precision.label)

    @classmethod
    def from_checkpoint(cls, directory: Path, config: ModelConfig) -> WeightBytes:
        """Real tensor sizes from the safetensors headers (quantized checkpoints included)."""
        from nemotron.checkpoint import hf

        layers = [[0.0, 0.0, 0.0] for _ in range(config.num_layers)]  # split, replicated (norms), k/v
        first, last = [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]
        for raw_name, (shape, dtype) in hf.tensor_shapes(directory).items():
            name = hf.normalise_name(_trunk_name(raw_name))
            nbytes = math.prod(shape) * _SAFETENSORS_ITEMSIZE.get(dtype, 2)
            match = re.match(r"model\.layers\.(\d+)\.", name)
            slot = layers[int(match[1])] if match else first if "embed_tokens" in name else last
            module = name.rsplit(".", 2)[-2]
            slot[1 if "norm" in module else 2 if module in ("k_proj", "v_proj") else 0] += nbytes
        return cls(tuple(Part(*p, config.num_kv_heads) for p in layers), Part(*first), Part(*last),
                   f"tensor sizes of {directory} ({config.quantization or config.torch_dtype})")


# A decode step's sampler, per logit of each sampled row, at its peak (sampling.sample with penalties,
# filters and log-probabilities): six float32 (B, V) tensors alive at once (the float logits, two stages
# of their processing, the probabilities, their CDF, the log-probabilities) and the penalty state
# (seen, generated and stop masks of one byte, the output penalty of four).
SAMPLING_FP32_COPIES = 6
SAMPLING_STATE_BYTES = 7


def sampling_workspace_bytes(vocab_size: int, logits_bytes: int, rows: int) -> int:
    """Memory a decode step's sampling holds beside the KV cache for `rows` sequences: their logits
    in the model's dtype (logits_bytes each), the sampler's float32 working copies and its penalty
    state. The engine reserves it for max_num_seqs rows on a GPU; the planner reports it."""
    return rows * vocab_size * (logits_bytes + 4 * SAMPLING_FP32_COPIES + SAMPLING_STATE_BYTES)


def prompt_logprobs_workspace_bytes(vocab_size: int, logits_bytes: int, scored_rows: int = SCORED_TOKENS,
                                    chunk_rows: int = SCORED_CHUNK_ROWS) -> int:
    """Memory a step scoring prompt tokens holds beside the KV cache: scored_rows rows of logits in the
    model's dtype (logits_bytes each), and chunk_rows of them in fp32 twice over (the float copy and its
    log-softmax, alive together). The engine sizes its KV pool with it, the planner reports it."""
    return scored_rows * vocab_size * logits_bytes + 2 * chunk_rows * vocab_size * 4


@dataclass(slots=True, frozen=True)
class Breakdown:
    weights: float
    kv_cache: float
    activations: float
    overhead: float
    mamba_state: float = 0.0  # Nemotron-H: constant per sequence
    prompt_logprobs: float = 0.0  # the engine's workspace for scoring prompt tokens (on the GPU holding the head)

    @property
    def total(self) -> float:
        return self.weights + self.kv_cache + self.activations + self.overhead + self.mamba_state + self.prompt_logprobs


@dataclass(slots=True, frozen=True)
class MemoryPlan:
    context: int
    batch: int
    tp: int
    pp: int
    whole: Breakdown  # the model once, as on one device
    per_gpu: Breakdown  # the busiest GPU of the TP x PP split

    @property
    def num_gpus(self) -> int:
        return self.tp * self.pp


def check_split(config: ModelConfig, tp: int, pp: int) -> None:
    if tp < 1 or pp < 1:
        raise ConfigError(f"--tp and --pp must be >= 1, got {tp} and {pp}")
    for field, value in (("attention heads", config.num_heads), ("FFN size", config.intermediate_size)):
        if value % tp:
            raise ConfigError(f"--tp {tp} must divide the model's {field} ({value})")
    if config.num_kv_heads % tp and tp % config.num_kv_heads:
        raise ConfigError(f"--tp {tp} must divide the KV heads ({config.num_kv_heads}) or be a multiple of them")
    if pp > config.num_layers:
        raise ConfigError(f"--pp {pp} exceeds the model's {config.num_layers} layers")
    if isinstance(config, NemotronHConfig) and config.n_groups % tp:
        raise ConfigError(f"--tp {tp} must divide the model's Mamba groups ({config.n_groups})")


def plan(config: ModelConfig, weights: WeightBytes, *, context: int | None = None, batch: int = 1,
         tp: int = 1, pp: int = 1) -> MemoryPlan:
    context = config.max_position_embeddings if context is None else context
    if not 1 <= context <= config.max_position_embeddings:
        raise ConfigError(f"--context must be in 1..{config.max_position_embeddings} (the model's context), "
                          f"got {context}")
    if batch < 1:
        raise ConfigError(f"--batch must be >= 1, got {batch}")
    check_split(config, tp, pp)
    everything = range(config.num_layers)
    scoring = _prompt_logprobs_bytes(config)
    whole = Breakdown(weights.total, _kv_bytes(config, batch, context, everything, 1),
                      _activation_bytes(config, batch, context, 1, True), RUNTIME_OVERHEAD_BYTES,
                      _mamba_state_bytes(config, batch, everything, 1), scoring)
    stages, start = [], 0
    for s in range(pp):
        count = config.num_layers // pp + (s < config.num_layers % pp)
        layers = range(start, start + count)
        layer_bytes = sum(p.per_rank(tp) for p in weights.layers[start:start + count])
        extra = (weights.first.per_rank(tp) if s == 0 else 0) + (weights.last.per_rank(tp) if s == pp - 1 else 0)
        stages.append(Breakdown(layer_bytes + extra, _kv_bytes(config, batch, context, layers, tp),
                                _activation_bytes(config, batch, context, tp, s == pp - 1), RUNTIME_OVERHEAD_BYTES,
                                _mamba_state_bytes(config, batch, layers, tp), scoring if s == pp - 1 else 0.0))
        start += count
    return MemoryPlan(context, batch, tp, pp, whole, max(stages, key=lambda b: b.total))


def _kv_bytes(config: ModelConfig | NemotronHConfig, batch: int, context: int, layers: range, tp: int) -> float:
    kv_heads = -(-config.num_kv_heads // tp)  # replicated when tp > KV heads
    if isinstance(config, NemotronHConfig):
        layers = [i for i in layers if config.layer_types[i] == ATTENTION]
    return batch * context * 2 * len(layers) * kv_heads * config.head_dim * KV_BYTES


def _prompt_logprobs_bytes(config: ModelConfig | NemotronHConfig) -> float:
    """The engine's prompt-scoring workspace at 16-bit logits, gathered over the whole vocabulary."""
    if isinstance(config, ModelConfig) and config.is_reward_model:  # scores through its own head: no logits
        return 0.0
    return prompt_logprobs_workspace_bytes(config.vocab_size, ACTIVATION_BYTES, min(SCORED_TOKENS, PREFILL_CHUNK_TOKENS))


def _mamba_state_bytes(config: ModelConfig | NemotronHConfig, batch: int, layers: range, tp: int) -> float:
    if not isinstance(config, NemotronHConfig):
        return 0.0
    count = sum(config.layer_types[i] == MAMBA for i in layers)
    return batch * count * config.mamba_state_bytes_per_sequence() / max(config.count(MAMBA), 1) / tp


def _activation_bytes(config: ModelConfig | NemotronHConfig, batch: int, context: int, tp: int,
                      has_head: bool) -> float:
    tokens = min(batch * context, PREFILL_CHUNK_TOKENS)
    widest = config.intermediate_size
    if isinstance(config, NemotronHConfig):
        widest = max(widest, 2 * config.mamba_inner + 2 * config.n_groups * config.ssm_state_size
                     + config.mamba_num_heads)
    live = tokens * (2 * config.hidden_size + 2 * widest // tp) * ACTIVATION_BYTES
    # The head's output rows are gathered whole on the rank that samples (tensor parallel: vocabulary split).
    logits = sampling_workspace_bytes(config.vocab_size, ACTIVATION_BYTES, batch) if has_head else 0
    return live + logits


@dataclass(slots=True, frozen=True)
class Setup:
    gpu: GPU
    tp: int
    pp: int
    per_gpu_bytes: float | None  # None when the GPU cannot run the precision at all
    fits: bool
    note: str = ""

    @property
    def num_gpus(self) -> int:
        return self.tp * self.pp


def unsupported(gpu: GPU, precision: Precision) -> str:
    if precision.needs_fp8 and not gpu.fp8:
        return "no FP8 tensor cores"
    if precision.needs_bf16 and not gpu.bf16:
        return "no bfloat16 (use --dtype fp16)"
    return ""


def smallest_setups(config: ModelConfig, weights: WeightBytes, precision: Precision, *,
                    context: int | None = None, batch: int = 1) -> list[Setup]:
    """For each catalog GPU, the fewest GPUs (1, 2, 4, 8, then whole 8-GPU nodes) the model fits on:
    TP inside a node (up to 8), PP across nodes."""
    setups = []
    for gpu in CATALOG:
        reason = unsupported(gpu, precision)
        if reason:
            setups.append(Setup(gpu, 1, 1, None, False, reason))
            continue
        counts = [1, 2, 4, 8] + ([GPUS_PER_NODE * n for n in range(2, MAX_NODES + 1)] if gpu.datacenter else [])
        found = None
        for count in counts:
            split = _split_for(config, count)
            if split is None:
                continue
            per_gpu = plan(config, weights, context=context, batch=batch, tp=split[0], pp=split[1]).per_gpu.total
            found = Setup(gpu, *split, per_gpu, per_gpu <= gpu.memory_bytes)
            if found.fits:
                break
        if found is None:
            found = Setup(gpu, 1, 1, None, False, "no valid TP x PP split")
        elif not found.fits:
            found = dataclasses.replace(found, note=f"does not fit on {found.num_gpus}")
        setups.append(found)
    return setups


def setups_for_split(config: ModelConfig, weights: WeightBytes, precision: Precision, *, tp: int, pp: int,
                     context: int | None = None, batch: int = 1) -> list[Setup]:
    per_gpu = plan(config, weights, context=context, batch=batch, tp=tp, pp=pp).per_gpu.total
    return [Setup(gpu, tp, pp, None, False, reason) if (reason := unsupported(gpu, precision)) else
            Setup(gpu, tp, pp, per_gpu, per_gpu <= gpu.memory_bytes) for gpu in CATALOG]


def _trunk_name(name: str) -> str:
    """NVIDIA's Nemotron-H exports name the trunk `backbone.` (see model.nemotron_h.sanitize_name)."""
    return "model." + name.removeprefix("backbone.") if name.startswith("backbone.") else name


def _split_for(config: ModelConfig, count: int) -> tuple[int, int] | None:
    """The widest valid TP (at most one node) for `count` GPUs, the rest as PP."""
    for tp in (8, 4, 2, 1):
        if tp <= count and count % tp == 0 and count // tp <= config.num_layers:
            try:
                check_split(config, tp, count // tp)
            except ConfigError:
                continue
            return tp, count // tp
    return None
