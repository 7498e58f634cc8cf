"""Nemotron-4 decoder in PyTorch, with Hugging Face parameter names so safetensors load as they are.

How Nemotron differs from Llama:
- LayerNorm1p (LayerNorm with bias, stored weight w applied as 1 + w) instead of RMSNorm;
- MLP is up_proj -> relu(x)^2 -> down_proj: no gate projection, no SiLU;
- rotary embedding only on the first head_dim * rotary_fraction channels of each head (rotate_half form);
- head_dim is its own setting (Minitron-8B: 48 heads x 128 on hidden 4096);
- no bias in any linear layer, no embedding scaling, untied output layer.

Attention goes through a cache object (`AttentionCache.attend`) so the engine can swap in a paged
KV cache without touching this file; with no cache the model runs plain causal self-attention.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention.bias import causal_lower_right

from nemotron.model.config import ModelConfig


class AttentionCache(Protocol):
    """Stores keys/values of past tokens and attends over them."""

    def attend(self, layer_idx: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """q (B, T, Hq, D), k/v (B, T, Hkv, D) of the new tokens -> output (B, T, Hq, D)."""
        ...


def causal_attention(q: Tensor, k: Tensor, v: Tensor, past_len: int = 0) -> Tensor:
    """q (B, Tq, Hq, D), k/v (B, Tk, Hkv, D) with Tk = past_len + Tq -> (B, Tq, Hq, D)."""
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
    t_q, t_k = q.shape[2], k.shape[2]
    if t_q == t_k:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    elif t_q == 1:  # one new token sees everything before it
        out = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    elif q.is_cuda:
        out = lower_right_causal_attention(q, k, v)
    else:  # new tokens after a cached prefix: query i sees keys 0 .. past_len + i
        rows = torch.arange(t_q, device=q.device)[:, None] + past_len
        mask = torch.arange(t_k, device=q.device)[None, :] <= rows
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    return out.transpose(1, 2)  # (B, Tq, Hq, D)


def lower_right_causal_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """q (B, Hq, Tq, D), k/v (B, Hkv, Tk, D), Tk > Tq: query i sees keys 0 .. Tk - Tq + i.

    On CUDA an explicit mask with grouped heads leaves SDPA only its math kernel, which upcasts to
    float32 and holds B x Hq x Tq x Tk scores (1.6 GB a layer for a 2,048-token chunk after 2,048
    cached tokens of the 8B shape): every prompt chunk after a cached prefix or an earlier chunk.
    torch's lower-right causal bias runs in the flash or memory-efficient kernels instead, which
    need as many key as query heads: the KV heads are repeated (head h reads KV head h // group).
    The same sums as the masked path up to the kernels' order of addition."""
    group = q.shape[1] // k.shape[1]
    if group > 1:
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(q.shape[2], k.shape[2]))


class LayerNorm1p(nn.Module):
    """LayerNorm whose stored weight is zero-centred: the scale applied is 1 + weight.

    Computed in fp32 (as Transformer Engine does for zero-centred gamma), so 1 + w keeps its
    precision when the weights are bf16. Without autograd the fp32 scale and bias are made once
    and reused until the parameters change (two ops fewer per norm on every decode step).
    """

    def __init__(self, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(hidden_size))
        self.bias = nn.Parameter(torch.zeros(hidden_size))
        self.eps = eps
        self._frozen: tuple[tuple, Tensor, Tensor] | None = None  # (parameter versions, scale, bias)

    def _scale_and_bias(self) -> tuple[Tensor, Tensor]:
        weight, bias = self.weight, self.bias  # each read goes through nn.Module.__getattr__ (~1 us): once
        if torch.is_grad_enabled():
            return weight.float() + 1.0, bias.float()
        key = (weight._version, bias._version, weight.data_ptr(), bias.data_ptr())
        if self._frozen is None or self._frozen[0] != key:
            self._frozen = (key, weight.float() + 1.0, bias.float().clone())
        return self._frozen[1], self._frozen[2]

    def forward(self, x: Tensor) -> Tensor:
        scale, bias = self._scale_and_bias()
        return F.layer_norm(x.float(), (x.shape[-1],), scale, bias, self.eps).to(x.dtype)

    @classmethod
    def sharing(cls, norm: LayerNorm1p) -> LayerNorm1p:
        """A `cls` (a kernel's subclass) holding `norm`'s own parameters: nothing is copied."""
        with torch.device("meta"):
            module = cls(norm.weight.shape[0], norm.eps)
        module.weight, module.bias = norm.weight, norm.bias
        return module

    def add_and_norm(self, x: Tensor, residual: Tensor) -> tuple[Tensor, Tensor]:
        """Inference: x += residual in place, then (x, norm(x)). One kernel on GPUs (engine.triton_norm)."""
        total = x.add_(residual)
        return total, self(total)


def rotary_cos_sin(positions: Tensor, rotary_dim: int, theta: float, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """positions (B, T) -> cos, signed_sin (B, T, 1, rotary_dim) in the split-halves layout.

    signed_sin is (-sin, sin) over the two halves, so that rotate_half(x) * sin, with
    rotate_half(x) = (-x2, x1), becomes x.roll(half) * signed_sin: one op instead of three, and
    bitwise the same (negation is exact).
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, rotary_dim, 2, device=positions.device, dtype=torch.float32)
                                / rotary_dim))
    freqs = positions[..., None].float() * inv_freq  # (B, T, rotary_dim / 2)
    cos, sin = freqs.cos().to(dtype), freqs.sin().to(dtype)
    return torch.cat((cos, cos), dim=-1)[:, :, None, :], torch.cat((-sin, sin), dim=-1)[:, :, None, :]


def apply_partial_rotary(x: Tensor, cos: Tensor, signed_sin: Tensor) -> Tensor:
    """Rotate the first rotary_dim channels of x (B, T, H, D); the rest pass through."""
    rotary_dim = cos.shape[-1]
    x_rot = x[..., :rotary_dim]
    rotated = x_rot * cos + x_rot.roll(rotary_dim // 2, dims=-1) * signed_sin
    if rotary_dim == x.shape[-1]:
        return rotated
    return torch.cat((rotated, x[..., rotary_dim:]), dim=-1)


def apply_partial_rotary_(x: Tensor, cos: Tensor, signed_sin: Tensor) -> Tensor:
    """apply_partial_rotary in place (inference: x is a fresh projection nothing else holds), the same
    roundings in the same order without a copy of the pass-through channels."""
    rotary_dim = cos.shape[-1]
    x_rot = x[..., :rotary_dim]
    rolled = x_rot.roll(rotary_dim // 2, dims=-1).mul_(signed_sin)  # roll copies before x_rot changes
    x_rot.mul_(cos).add_(rolled)
    return x


class NemotronAttention(nn.Module):
    # q / k rotation in place at inference; the engine sets a one-kernel version on GPUs (engine.triton_rotary)
    rotate_ = staticmethod(apply_partial_rotary_)

    def __init__(self, config: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_heads, config.num_kv_heads, config.head_dim
        h = config.hidden_size
        self.q_proj: nn.Linear | None = nn.Linear(h, self.num_heads * self.head_dim, bias=False)
        self.k_proj: nn.Linear | None = nn.Linear(h, self.num_kv_heads * self.head_dim, bias=False)
        self.v_proj: nn.Linear | None = nn.Linear(h, self.num_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, h, bias=False)
        self.qkv_proj: nn.Linear | None = None  # set by fuse_qkv(): one matmul instead of three

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, cache: AttentionCache | None) -> Tensor:
        b, t, _ = x.shape
        hq, hkv = self.num_heads, self.num_kv_heads
        if self.qkv_proj is None:
            q = self.q_proj(x).view(b, t, hq, self.head_dim)  # (B, T, Hq, D)
            k = self.k_proj(x).view(b, t, hkv, self.head_dim)  # (B, T, Hkv, D)
            v = self.v_proj(x).view(b, t, hkv, self.head_dim)
            q, k = apply_partial_rotary(q, cos, sin), apply_partial_rotary(k, cos, sin)
        else:
            qkv = self.qkv_proj(x).view(b, t, hq + 2 * hkv, self.head_dim)  # (B, T, Hq + 2 Hkv, D)
            rotate = apply_partial_rotary if torch.is_grad_enabled() else self.rotate_
            # split_with_sizes: Tensor.split's op without its Python wrapper (an AttributeError per call)
            q, k = rotate(qkv[:, :, :hq + hkv], cos, sin).split_with_sizes([hq, hkv], dim=2)
            v = qkv[:, :, hq + hkv:]
        out = causal_attention(q, k, v) if cache is None else cache.attend(self.layer_idx, q, k, v)
        return self.o_proj(out.reshape(b, t, hq * self.head_dim))

    @torch.no_grad()
    def fuse_qkv(self) -> None:
        weight = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])
        with torch.device(weight.device):
            self.qkv_proj = nn.Linear(weight.shape[1], weight.shape[0], bias=False, dtype=weight.dtype)
        self.qkv_proj.weight.copy_(weight)
        self.q_proj = self.k_proj = self.v_proj = None


def relu_squared_(hidden: Tensor) -> Tensor:
    """Squared ReLU in place (inference: nothing else holds the up-projection's output)."""
    return hidden.relu_().square_()


class NemotronMLP(nn.Module):
    # Squared ReLU in place at inference; the engine sets a one-kernel version on GPUs (engine.triton_activation)
    activation_ = staticmethod(relu_squared_)

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        hidden = self.up_proj(x)  # (..., FFN): the widest activation of the model
        if torch.is_grad_enabled():
            return self.down_proj(F.relu(hidden).square())
        # Inference: in place, as nothing else holds `hidden`. Two fewer FFN-wide allocations per
        # layer; on CPUs each fresh one costs page faults that took longer than the math itself.
        return self.down_proj(self.activation_(hidden))


class NemotronDecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.input_layernorm = LayerNorm1p(config.hidden_size, config.norm_eps)
        self.self_attn = NemotronAttention(config, layer_idx)
        self.post_attention_layernorm = LayerNorm1p(config.hidden_size, config.norm_eps)
        self.mlp = NemotronMLP(config)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, cache: AttentionCache | None) -> Tensor:
        if torch.is_grad_enabled():
            h = x + self.self_attn(self.input_layernorm(x), cos, sin, cache)
            return h + self.mlp(self.post_attention_layernorm(h))
        out, h = self.forward_unsummed(x, None, cos, sin, cache)
        return out.add_(h)

    def forward_unsummed(self, x: Tensor, residual: Tensor | None, cos: Tensor, sin: Tensor,
                         cache: AttentionCache | None) -> tuple[Tensor, Tensor]:
        """Inference, with the residual stream carried apart: the stream coming in is x + residual (x
        alone when residual is None), added by the input norm (one kernel on GPUs, as the attention's
        residual is added by the second norm); returns (MLP output, stream after attention), for the
        next layer or the final norm to add the same way. The adds are in place into the fresh sublayer
        outputs, the same sums as `forward`'s (a + b == b + a)."""
        if residual is None:
            stream, normed = x, self.input_layernorm(x)
        else:
            stream, normed = self.input_layernorm.add_and_norm(x, residual)
        attended = self.self_attn(normed, cos, sin, cache)
        h, normed = self.post_attention_layernorm.add_and_norm(attended, stream)
        return self.mlp(normed), h


class NemotronModel(nn.Module):
    """Embedding, decoder layers and final norm: the trunk shared by the LM and reward heads."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(NemotronDecoderLayer(config, i) for i in range(config.num_layers))
        self.norm = LayerNorm1p(config.hidden_size, config.norm_eps)
        # (context, 2, rotary_dim): cos, signed sin of every position, per (dtype, device). Never
        # dropped: a captured CUDA graph keeps reading the table it was captured with.
        self._rotary_tables: dict[tuple[torch.dtype, torch.device], Tensor] = {}

    def rotary(self, positions: Tensor, dtype: torch.dtype, bounded: bool) -> tuple[Tensor, Tensor]:
        """rotary_cos_sin of positions (B, T). When all are `bounded` by the model's context and autograd
        is off, rows of a table made once per model: one index op per decode step instead of a dozen,
        the same numbers. Past the context the computed path extrapolates, as it always did."""
        if torch.is_grad_enabled() or not bounded:
            return rotary_cos_sin(positions, self.config.rotary_dim, self.config.rope_theta, dtype)
        table = self._rotary_tables.get((dtype, positions.device))
        if table is None:
            every = torch.arange(self.config.max_position_embeddings, device=positions.device)[None]
            cos, sin = rotary_cos_sin(every, self.config.rotary_dim, self.config.rope_theta, dtype)
            table = self._rotary_tables[(dtype, positions.device)] = torch.cat((cos, sin), dim=2)[0]
        rows = table[positions]  # (B, T, 2, rotary_dim)
        return rows[:, :, 0:1], rows[:, :, 1:2]

    def forward(self, input_ids: Tensor, positions: Tensor | None = None,
                cache: AttentionCache | None = None) -> Tensor:
        """input_ids (B, T), positions (B, T) (default 0..T-1) -> final-normed hidden (B, T, H)."""
        context = self.config.max_position_embeddings
        if positions is None:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
            bounded = input_ids.shape[1] <= context
        else:
            # A KV cache holds at most the context (the engine's, ContiguousKVCache). Other explicit
            # positions are checked on the CPU only: on a GPU the check would cost a host sync.
            bounded = cache is not None or (positions.device.type == "cpu"
                                            and (positions.numel() == 0 or int(positions.max()) < context))
        x = self.embed_tokens(input_ids)  # (B, T, H)
        cos, sin = self.rotary(positions, x.dtype, bounded)
        if torch.is_grad_enabled():
            for layer in self.layers:
                x = layer(x, cos, sin, cache)
            return self.norm(x)
        residual = None  # inference: each layer's MLP output and stream are added by the next norm
        for layer in self.layers:
            x, residual = layer.forward_unsummed(x, residual, cos, sin, cache)
        if residual is None:  # no layers
            return self.norm(x)
        if isinstance(self.norm, LayerNorm1p):
            return self.norm.add_and_norm(x, residual)[1]
        return self.norm(x.add_(residual))  # a pipeline stage's nn.Identity: the summed stream goes on


class NemotronForCausalLM(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.model = NemotronModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    def forward(self, input_ids: Tensor, positions: Tensor | None = None,
                cache: AttentionCache | None = None, last_only: bool = False) -> Tensor:
        """-> logits (B, T, V), or (B, 1, V) for the last position only (decoding)."""
        hidden = self.model(input_ids, positions, cache)
        if last_only:
            hidden = hidden[:, -1:]
        return self.lm_head(hidden)


class NemotronForRewardModel(nn.Module):
    """Nemotron-4 340B Reward: the trunk plus a linear head on the last token's final hidden state."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.model = NemotronModel(config)
        self.rm_head = nn.Linear(config.hidden_size, config.num_reward_attributes, bias=config.reward_head_bias)

    def forward(self, input_ids: Tensor, positions: Tensor | None = None,
                cache: AttentionCache | None = None, lengths: Tensor | None = None) -> Tensor:
        """input_ids (B, T), right-padded when lengths (B,) is given -> attribute scores (B, A)."""
        hidden = self.model(input_ids, positions, cache)  # (B, T, H)
        if lengths is None:
            last = hidden[:, -1]
        else:
            last = hidden[torch.arange(hidden.shape[0], device=hidden.device), lengths - 1]
        return self.rm_head(last).float()


NemotronLike = NemotronForCausalLM | NemotronForRewardModel


def build_model(config: ModelConfig) -> NemotronLike:
    """The right head for the config; call under `torch.device("meta")` to allocate nothing."""
    return NemotronForRewardModel(config) if config.is_reward_model else NemotronForCausalLM(config)


def replace_modules(model: nn.Module, replacement: Callable[[str, nn.Module], nn.Module | None]) -> int:
    """In place: every submodule for which `replacement(name, module)` returns a module is swapped for
    it on its parent (the transforms: LoRA, CPU kernels, Triton norms). Returns how many were."""
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            new = replacement(name, child)
            if new is not None:
                setattr(parent, name, new)
                count += 1
    return count


def override_on_cuda(model: nn.Module, module_type: type[nn.Module], attribute: str, function: Callable) -> nn.Module:
    """In place: `attribute` set to `function` on every `module_type` module whose tensors are on CUDA
    (the engine's one-kernel versions of a module's in-place step: rotary, squared ReLU)."""
    for module in model.modules():
        if isinstance(module, module_type):
            tensor = next(iter([*module.parameters(), *module.buffers()]), None)  # quantized layers: buffers
            if tensor is not None and tensor.device.type == "cuda":
                setattr(module, attribute, function)
    return model


def fuse_qkv(model: nn.Module) -> nn.Module:
    """Inference transform: merge each layer's q/k/v projections into one (state dict names change)."""
    for module in model.modules():
        if isinstance(module, NemotronAttention) and module.qkv_proj is None:
            module.fuse_qkv()
    return model


@torch.no_grad()
def init_random_weights(model: nn.Module, seed: int = 0, std: float = 0.02) -> None:
    """Small random weights, for presets without a checkpoint and for tests."""
    # Drawn on the parameters' device: CPU draws are the same as ever (tests, presets); on a GPU an 8B
    # model's weights take seconds, where drawing them on the CPU and copying took about a minute.
    generators: dict[torch.device, torch.Generator] = {}
    for name, param in model.named_parameters():
        if name.endswith("layernorm.weight") or name.endswith("norm.weight") or name.endswith(".bias"):
            param.zero_()
        else:
            if param.device not in generators:
                generators[param.device] = torch.Generator(device=param.device).manual_seed(seed)
            param.copy_(torch.randn(param.shape, generator=generators[param.device], device=param.device,
                                    dtype=torch.float32) * std)
