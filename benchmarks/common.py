"""Shared setup for the benchmarks: a random-weight model on the chosen device, and a matching
`transformers` model with the very same weights as the reference."""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import torch

from nemotron.checkpoint.load import LoadedModel, ModelSource, SourceKind, parse_dtype
from nemotron.model.config import ModelConfig
from nemotron.model.nemotron import build_model, init_random_weights
from nemotron.model.presets import get_preset

# A CPU-sized shape (≈ 30M parameters); `--preset minitron-8b` etc. for GPUs.
SMALL = ModelConfig(vocab_size=32000, hidden_size=512, intermediate_size=2048, num_layers=8, num_heads=8,
                    num_kv_heads=2, head_dim=64, max_position_embeddings=4096, torch_dtype="float32")
# The 8B shape of the issue: Minitron-8B's layers with 32 heads (GQA 4:1).
SHAPE_8B = ModelConfig(vocab_size=256000, hidden_size=4096, intermediate_size=16384, num_layers=32,
                       num_heads=32, num_kv_heads=8, head_dim=128)


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="small", help="small, 8b, or any preset name")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on GPU, float32 on CPU")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")


@dataclass
class Setup:
    config: ModelConfig
    loaded: LoadedModel
    device: torch.device
    dtype: torch.dtype


class NullTokenizer:
    """Ids only: benchmarks feed token ids and never look at text."""

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size, self.bos_id, self.eos_id, self.pad_id = vocab_size, 2, 3, 0

    def stream_decoder(self, prompt_ids=None):
        return _NullDecoder()

    def id_to_piece(self, token_id: int) -> str:
        return f"<{token_id}>"


class _NullDecoder:
    def push(self, token_id: int) -> str:
        return ""

    def flush(self) -> str:
        return ""


def make_setup(args: argparse.Namespace) -> Setup:
    if args.threads:
        torch.set_num_threads(args.threads)
    config = {"small": SMALL, "8b": SHAPE_8B}.get(args.preset) or get_preset(args.preset)
    device = torch.device(args.device)
    dtype = parse_dtype(args.dtype) or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    with torch.device(device):
        model = build_model(config).to(dtype)
    init_random_weights(model, seed=0)
    loaded = LoadedModel(model.eval(), config, NullTokenizer(config.vocab_size),
                         ModelSource(SourceKind.PRESET, args.preset, None))
    return Setup(config, loaded, device, dtype)


def transformers_twin(setup: Setup):
    """transformers' NemotronForCausalLM holding the same weights (parameter names are identical)."""
    from transformers import NemotronConfig, NemotronForCausalLM

    c = setup.config
    hf_config = NemotronConfig(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads, num_key_value_heads=c.num_kv_heads,
        head_dim=c.head_dim, partial_rotary_factor=c.rotary_fraction, max_position_embeddings=c.max_position_embeddings,
        bos_token_id=2, eos_token_id=3, pad_token_id=0)
    with torch.device(setup.device):  # not meta: transformers keeps its rotary buffer in the module
        hf_model = NemotronForCausalLM(hf_config).to(setup.dtype)
    hf_model.load_state_dict(setup.loaded.model.state_dict(), strict=True)
    return hf_model.eval()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int = 1) -> float:
    """Best wall time of `repeats` runs (the least disturbed by other work on the machine)."""
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def matmul_floor(model: torch.nn.Module, batch: int, device: torch.device, repeats: int = 10) -> float:
    """Seconds per decode step spent in the weight matmuls alone: every linear layer once on a
    (batch, in) input, nothing else. No decoder can beat it; on CPUs (where there is no separate
    bandwidth figure to compare with) it is the limit a decode step is measured against. The engine's
    CPU kernels (nemotron.quant.cpu) replace linear layers in place; those run as the engine runs them."""
    from nemotron.quant.cpu import CpuLinear

    linears = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, CpuLinear))]
    dtype = model.model.embed_tokens.weight.dtype  # the activations'
    inputs = {m.in_features: torch.randn(batch, m.in_features, dtype=dtype, device=device) for m in linears}

    def one_pass() -> None:
        for m in linears:
            m(inputs[m.in_features])  # bias-free layers: a plain Linear's forward is F.linear

    with torch.inference_mode():
        one_pass()
        return timed(one_pass, device, repeats)


def bytes_per_step(model: torch.nn.Module) -> int:
    """Weights and scales a decode step reads: everything but the embedding table (one row per token).
    A CPU kernel's layer (nemotron.quant.cpu) counts its own weight, which is no parameter."""
    embedding = model.model.embed_tokens.weight
    total = 0
    for module in model.modules():
        if hasattr(module, "stored_bytes"):
            total += module.stored_bytes()
        tensors = (*module.parameters(recurse=False), *module.buffers(recurse=False))
        total += sum(t.numel() * t.element_size() for t in tensors if t is not embedding)
    return total


def copy_bandwidth(device: torch.device, nbytes: int = 2 * 1024**3) -> float:
    """Measured device memory bandwidth in bytes/s (read + write of a large copy)."""
    src = torch.empty(nbytes // 2, dtype=torch.float16, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = min(timed(lambda: dst.copy_(src), device) for _ in range(5))
    return 2 * nbytes / best
