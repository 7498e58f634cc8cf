"""How far a quantized model is from its original: logits error and greedy agreement.

Both models continue the same fixed prompts greedily through the engine. Agreement is counted
strictly: a continuation contributes the tokens it shares with the reference *before its first
divergence* (after one differing token the contexts differ, and positions that happen to match
again say nothing). The lenient position-by-position rate and the teacher-forced rate (same argmax
given the reference's own context, so errors do not compound) are reported beside it, with the
logits error measured on those teacher-forced positions.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from nemotron.checkpoint.load import LoadedModel, ModelSource, SourceKind
from nemotron.engine.llm import LLM
from nemotron.engine.llm_engine import EngineConfig
from nemotron.engine.sampling import SamplingParams
from nemotron.model.config import ModelConfig
from nemotron.model.nemotron import build_model, init_random_weights

# Multiples of 128 everywhere (int4 groups); FFN = vocab: one planted neuron per token.
PLANTED_CONFIG = ModelConfig(vocab_size=512, hidden_size=128, intermediate_size=512, num_layers=4, num_heads=4,
                             num_kv_heads=2, head_dim=32, max_position_embeddings=256, torch_dtype="float32")


@dataclass(slots=True, frozen=True)
class QualityReport:
    tokens: int  # generated tokens compared: prompts x new tokens
    prefix_agreement: float  # share of tokens identical up to each continuation's first divergence
    position_agreement: float  # share of positions holding the same token
    teacher_forced_agreement: float  # same argmax as the reference given the reference's context
    logits_max_abs_error: float
    logits_relative_error: float  # ||candidate - reference|| / ||reference||, all positions compared
    mean_kl: float  # KL(reference || candidate) in nats, averaged over positions
    # How decisive the reference is on its own greedy path: agreement means little without this.
    reference_top1_median: float  # median probability of the reference's chosen token
    reference_contested: float  # share of positions where that probability is below 0.5
    reference_distinct: float  # distinct tokens per continuation, averaged (low: loops)

    def summary(self) -> str:
        return (f"reference: top-1 probability median {self.reference_top1_median:.3f}, below 0.5 at "
                f"{self.reference_contested:.1%} of positions, {self.reference_distinct:.1f} distinct tokens "
                f"per continuation\n"
                f"greedy agreement {self.prefix_agreement:6.1%} (to first divergence), "
                f"{self.position_agreement:6.1%} (by position), {self.teacher_forced_agreement:6.1%} "
                f"(teacher-forced) over {self.tokens} tokens | logits max |err| {self.logits_max_abs_error:.4f}, "
                f"relative {self.logits_relative_error:.2e}, KL {self.mean_kl:.2e}")


@torch.no_grad()
def planted_map_model(strength: float = 0.07, seed: int = 1, noise_std: float = 0.05) -> LoadedModel:
    """A small random model that is decisive like a trained one, through its quantized layers.

    Default random weights (N(0, 0.02²)) make near-uniform next-token distributions: the top two
    logits of a greedy step are often hundredths of a nat apart, so small perturbations flip decisions
    and 64-token continuations diverge whatever the precision (int8 kept ~40% of tokens when we
    measured). Trained LMs are decisive on most tokens and contested on a few. This model imitates
    that: random weights N(0, noise_std²) (small enough that the network is smooth: int8's 0.4% weight
    error stays under 1% in the logits), random N(0, 1) embeddings and LM head, and a
    token map planted in layer 1's MLP: neuron i fires on token i's embedding and writes the output
    direction of token π(i), π a random permutation, with gain `strength`. The map makes decisions
    confident and puts them in quantized weights (zero that MLP and agreement falls to ~0); the
    random layers contest a few (at strength 0.07: ~1% of greedy steps have top-1 probability < 0.5,
    ~6% below 0.9). Lower strength: less decisive, lower agreement for every scheme.
    """
    config = PLANTED_CONFIG
    model = build_model(config)
    init_random_weights(model, seed, noise_std)
    generator = torch.Generator().manual_seed(seed + 1)
    embeddings = torch.randn(config.vocab_size, config.hidden_size, generator=generator)  # (V, H)
    outputs = torch.randn(config.vocab_size, config.hidden_size, generator=generator)  # (V, H)
    model.model.embed_tokens.weight.copy_(embeddings)
    model.lm_head.weight.copy_(outputs * 4 / config.hidden_size ** 0.5)
    permutation = torch.randperm(config.vocab_size, generator=generator)
    mlp = model.model.layers[1].mlp
    mlp.up_proj.weight.copy_(embeddings / embeddings.norm(dim=1, keepdim=True))  # neuron i: token i
    directions = outputs / outputs.norm(dim=1, keepdim=True)
    mlp.down_proj.weight.copy_(strength * directions[permutation].t())  # (H, V): neuron i -> token π(i)
    return LoadedModel(model.eval(), config, IdsOnlyTokenizer(config.vocab_size),
                       ModelSource(SourceKind.PRESET, f"planted-map(strength={strength}, seed={seed})", None))


class IdsOnlyTokenizer:
    """Lets the engine run a model that has no tokenizer: ids in, ids out, no text."""

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size, self.bos_id, self.eos_id, self.pad_id = vocab_size, 2, 3, 0

    def stream_decoder(self, prompt_ids: list[int] | None = None) -> _NoText:
        return _NoText()


class _NoText:
    def push(self, token_id: int) -> str:
        return ""

    def flush(self) -> str:
        return ""


def greedy_continuations(loaded: LoadedModel, prompts: list[list[int]], new_tokens: int,
                         batch_size: int | None = None) -> list[list[int]]:
    """Engine greedy decoding, EOS ignored, so every continuation has `new_tokens` tokens; at most
    `batch_size` sequences at a time (default: all of them)."""
    if loaded.tokenizer is None:
        loaded = dataclasses.replace(loaded, tokenizer=IdsOnlyTokenizer(loaded.config.vocab_size))
    llm = LLM(loaded, EngineConfig(max_num_seqs=batch_size or len(prompts)))
    params = SamplingParams(max_tokens=new_tokens, temperature=0, ignore_eos=True)
    return [result.outputs[0].token_ids for result in llm.generate(prompts, params)]


class QualityProbe:
    """The reference's greedy continuations and teacher-forced logits over fixed prompts, computed
    once; `compare(candidate)` measures any number of candidates against them."""

    @torch.inference_mode()
    def __init__(self, reference: LoadedModel, prompts: list[list[int]], new_tokens: int = 64) -> None:
        self.prompts, self.new_tokens = prompts, new_tokens
        self.expected = greedy_continuations(reference, prompts, new_tokens)
        self.inputs = [prompt + continuation[:-1] for prompt, continuation in zip(prompts, self.expected)]
        self.logits = [self._logits(reference, ids, len(prompt)) for ids, prompt in zip(self.inputs, prompts)]

    @staticmethod
    def _logits(loaded: LoadedModel, ids: list[int], prompt_len: int) -> torch.Tensor:
        """(new_tokens, V) float32 on the CPU: the positions that predict the continuation."""
        device = next(loaded.model.parameters()).device  # (a CPU kernel's packed int8 head holds no weight tensor)
        return loaded.model(torch.tensor([ids], device=device))[0, prompt_len - 1:].float().cpu()

    @torch.inference_mode()
    def compare(self, candidate: LoadedModel, batch_size: int | None = None) -> QualityReport:
        """`batch_size` 1: the candidate decodes one sequence at a time (the batch-1 kernels, e.g. the
        CPU's one-row int8 path); the teacher-forced logits are whole-sequence forwards either way."""
        actual = greedy_continuations(candidate, self.prompts, self.new_tokens, batch_size)
        prefix = position = 0
        for want, got in zip(self.expected, actual):
            same = [a == b for a, b in zip(want, got)]
            prefix += same.index(False) if False in same else len(same)
            position += sum(same)
        ref = torch.cat(self.logits)  # (prompts x new_tokens, V)
        out = torch.cat([self._logits(candidate, ids, len(prompt)) for ids, prompt in zip(self.inputs, self.prompts)])
        log_p, log_q = ref.log_softmax(-1), out.log_softmax(-1)
        top1 = log_p.exp().amax(-1)
        total = len(self.prompts) * self.new_tokens
        return QualityReport(
            tokens=total, prefix_agreement=prefix / total, position_agreement=position / total,
            teacher_forced_agreement=(ref.argmax(-1) == out.argmax(-1)).float().mean().item(),
            logits_max_abs_error=(out - ref).abs().max().item(),
            logits_relative_error=((out - ref).norm() / ref.norm()).item(),
            mean_kl=(log_p.exp() * (log_p - log_q)).sum(-1).mean().item(),
            reference_top1_median=top1.median().item(), reference_contested=(top1 < 0.5).float().mean().item(),
            reference_distinct=sum(len(set(c)) for c in self.expected) / len(self.expected))


def compare(reference: LoadedModel, candidate: LoadedModel, prompts: list[list[int]],
            new_tokens: int = 64) -> QualityReport:
    return QualityProbe(reference, prompts, new_tokens).compare(candidate)
