"""Nemotron-H in PyTorch: a hybrid stack of Mamba-2, attention and MLP layers, with Hugging Face
parameter names (`model.layers.N.mixer.*`), so transformers' safetensors load as they are.

How Nemotron-H differs from Nemotron-4 (model/nemotron.py):
- each layer is one mixer behind one pre-norm and a residual: a Mamba-2 mixer (most layers), GQA
  attention (about 8% of layers) or a squared-ReLU MLP, in the order of the config's layer pattern;
- RMSNorm (weight applied as is) instead of LayerNorm1p; no biases;
- attention has no positional encoding at all (no rotary): the Mamba layers carry order;
- the Mamba layers keep a constant-size state per sequence (a conv window and an SSM state)
  instead of a KV cache that grows with the context.

The Mamba-2 mixer: in_proj gives the gate z, the conv input (x, B, C) and the step size dt;
x, B, C pass a causal depthwise conv1d and SiLU; the selective state-space recurrence
    h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t,   y_t = C_t h_t + D x_t
runs per head (B and C shared by the heads of a group), in the chunked SSD form over a sequence and
as the one-step recurrence while decoding; then RMSNorm(y * silu(z)) per group, and out_proj.
transformers clamps dt from below at time_step_min in its chunked scan but not in its one-step
update; both paths here clamp, so a cached decode equals a full recompute (they agree with
transformers whenever softplus(dt) >= time_step_min).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nemotron.model.nemotron import NemotronForCausalLM, causal_attention
from nemotron.model.nemotron_h_config import ATTENTION, MAMBA, NemotronHConfig


class HybridCache:
    """Decode state of a batch of equal-length sequences: conv window and SSM state (fp32) per Mamba
    layer, keys and values per attention layer. Implements the `AttentionCache` protocol, and the
    `mamba` hook through which a Mamba mixer runs its recurrence from and into the cached state
    (the engine's paged cache implements the same hook over per-sequence state slots)."""

    def __init__(self, config: NemotronHConfig, batch: int, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu") -> None:
        num_mamba, num_attention = config.count(MAMBA), config.count(ATTENTION)
        self.conv = [torch.zeros(batch, config.conv_dim, config.conv_kernel - 1, device=device)
                     for _ in range(num_mamba)]
        self.ssm = [torch.zeros(batch, config.mamba_num_heads, config.mamba_head_dim, config.ssm_state_size,
                                device=device) for _ in range(num_mamba)]
        empty = torch.zeros(batch, 0, config.num_kv_heads, config.head_dim, dtype=dtype, device=device)
        self.keys = [empty] * num_attention
        self.values = [empty] * num_attention

    def attend(self, kv_index: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        past = self.keys[kv_index].shape[1]
        self.keys[kv_index] = torch.cat([self.keys[kv_index], k], dim=1)  # (B, past + T, Hkv, D)
        self.values[kv_index] = torch.cat([self.values[kv_index], v], dim=1)
        return causal_attention(q, self.keys[kv_index], self.values[kv_index], past)

    def mamba(self, state_index: int, mix: MixFn, xbc: Tensor, dt: Tensor) -> Tensor:
        y, self.conv[state_index], self.ssm[state_index] = mix(xbc, dt, self.conv[state_index],
                                                               self.ssm[state_index])
        return y

    def advance(self, num_tokens: int) -> None:
        """ContiguousKVCache's protocol (the reference decoder): the states already moved on."""

    def positions(self, num_tokens: int, batch_size: int) -> None:
        """No positional encoding: nothing to give the model."""
        return None

    def state_bytes(self) -> int:
        tensors = [*self.conv, *self.ssm, *self.keys, *self.values]
        return sum(t.numel() * t.element_size() for t in tensors)


# (xbc (b, T, conv_dim), raw dt (b, T, H), conv state (b, conv_dim, K - 1) or None, SSM state
#  (b, H, P, N) or None) -> (y (b, T, H, P) fp32, conv state, SSM state): one Mamba layer's recurrence.
MixFn = Callable[[Tensor, Tensor, "Tensor | None", "Tensor | None"], tuple[Tensor, Tensor, Tensor]]


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.square().mean(-1, keepdim=True) + self.eps)
        return (self.weight.float() * h).to(x.dtype)


class GatedRMSNorm(nn.Module):
    """RMSNorm of y * silu(z), normalised over each of n_groups channel groups separately."""

    def __init__(self, hidden_size: int, n_groups: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.n_groups, self.eps = n_groups, eps

    def forward(self, y: Tensor, gate: Tensor) -> Tensor:
        h = y.float() * F.silu(gate.float())
        h = h.unflatten(-1, (self.n_groups, -1))  # (..., G, I / G)
        h = h * torch.rsqrt(h.square().mean(-1, keepdim=True) + self.eps)
        return self.weight * h.flatten(-2).to(y.dtype)


def ssd_chunked(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk: int,
                state: Tensor) -> tuple[Tensor, Tensor]:
    """The selective scan over a sequence in the chunked SSD form, fp32.

    x (b, T, H, P), dt (b, T, H) (already softplus'd), A (H,) negative, B/C (b, T, H, N) (groups
    expanded to heads), state (b, H, P, N) before the first token -> y (b, T, H, P) without the D
    skip, final state (b, H, P, N). Inside a chunk the scan is a masked matrix product (attention
    like); between chunks the state is carried by a short loop.
    """
    b, t, h, p = x.shape
    pad = -t % chunk
    # Padded steps have dt = 0: no decay and no input, so the final state is unchanged.
    x, dt, B, C = (F.pad(z, (0, 0) * (z.dim() - 2) + (0, pad)) for z in (x, dt, B, C))
    c = (t + pad) // chunk
    xdt = (x * dt[..., None]).view(b, c, chunk, h, p)  # (b, c, l, H, P)
    B, C = B.view(b, c, chunk, h, -1), C.view(b, c, chunk, h, -1)  # (b, c, l, H, N)
    log_decay = (dt * A).view(b, c, chunk, h).cumsum(dim=2)  # (b, c, l, H): sum of dt A up to l

    # Within a chunk: y_l = sum_{s <= l} exp(cum_l - cum_s) (C_l . B_s) xdt_s
    diff = log_decay[:, :, :, None, :] - log_decay[:, :, None, :, :]  # (b, c, l, s, H)
    causal = torch.ones(chunk, chunk, dtype=torch.bool, device=x.device).tril()[:, :, None]
    decay = diff.masked_fill(~causal, float("-inf")).exp()
    scores = torch.einsum("bclhn,bcshn->bclsh", C, B) * decay
    y = torch.einsum("bclsh,bcshp->bclhp", scores, xdt)

    # What each chunk adds to the state by its end, then the state at each chunk's start.
    to_end = (log_decay[:, :, -1:] - log_decay).exp()  # (b, c, l, H)
    added = torch.einsum("bclhn,bclh,bclhp->bchpn", B, to_end, xdt)  # (b, c, H, P, N)
    chunk_decay = log_decay[:, :, -1].exp()  # (b, c, H)
    starts = []
    for i in range(c):
        starts.append(state)
        state = state * chunk_decay[:, i, :, None, None] + added[:, i]
    start = torch.stack(starts, dim=1)  # (b, c, H, P, N)

    # Across chunks: y_l += exp(cum_l) C_l . start
    y = y + torch.einsum("bclhn,bchpn->bclhp", C, start) * log_decay.exp()[..., None]
    return y.reshape(b, c * chunk, h, p)[:, :t], state


def ssd_step(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
    """One token of the recurrence, fp32: x (b, H, P), dt (b, H), B/C (b, H, N), state (b, H, P, N)."""
    decay = (dt * A).exp()[:, :, None, None]  # (b, H, 1, 1)
    state = state * decay + (dt[:, :, None] * x)[..., None] * B[:, :, None, :]  # (b, H, P, N)
    # (a product and a sum: on CPUs many times faster than einsum's batched matmul of these shapes)
    return (state * C[:, :, None, :]).sum(-1), state


class Mamba2Mixer(nn.Module):
    def __init__(self, config: NemotronHConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.state_index = config.layer_types[:layer_idx].count(MAMBA)  # its state among the Mamba layers'
        self.num_heads, self.head_dim = config.mamba_num_heads, config.mamba_head_dim
        self.n_groups, self.state_size = config.n_groups, config.ssm_state_size
        self.inner, self.conv_dim = config.mamba_inner, config.conv_dim
        self.chunk_size, self.time_step_min = config.chunk_size, config.time_step_min
        self.in_proj = nn.Linear(config.hidden_size, self.inner + self.conv_dim + self.num_heads, bias=config.use_bias)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, config.conv_kernel, groups=self.conv_dim,
                                bias=config.use_conv_bias)
        self.dt_bias = nn.Parameter(torch.ones(self.num_heads))
        self.A_log = nn.Parameter(torch.log(torch.arange(1, self.num_heads + 1, dtype=torch.float32)))
        self.D = nn.Parameter(torch.ones(self.num_heads))
        self.norm = GatedRMSNorm(self.inner, config.n_groups, config.norm_eps)
        self.out_proj = nn.Linear(self.inner, config.hidden_size, bias=config.use_bias)

    def forward(self, hidden: Tensor, cache: HybridCache | None) -> Tensor:
        b, t, _ = hidden.shape
        gate, xbc, dt = self.in_proj(hidden).split([self.inner, self.conv_dim, self.num_heads], dim=-1)
        if cache is None:
            y = self.mix(xbc, dt, None, None)[0]
        else:  # the cache decides how the rows' states are kept (and, in the engine, which rows are whose)
            y = cache.mamba(self.state_index, self.mix, xbc, dt)
        y = self.norm(y.reshape(b, t, self.inner), gate)
        return self.out_proj(y.to(hidden.dtype))

    def mix(self, xbc: Tensor, dt: Tensor, conv_state: Tensor | None,
            ssm_state: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """The recurrent core over (b, T) rows continuing from the given states (None: zeros): causal
        conv, the selective scan (one step for a single token after a state, else chunked SSD) and
        the D skip -> y (b, T, H, P) fp32 and both states after the last row (fp32). See `MixFn`."""
        b, t, _ = xbc.shape
        xbc, conv_state = self._conv(xbc.transpose(1, 2), conv_state)
        bc = self.n_groups * self.state_size
        x, B, C = xbc.transpose(1, 2).float().split([self.inner, bc, bc], dim=-1)
        x = x.reshape(b, t, self.num_heads, self.head_dim)  # (b, T, H, P)
        per_group = self.num_heads // self.n_groups
        B = B.reshape(b, t, self.n_groups, self.state_size).repeat_interleave(per_group, dim=2)  # (b, T, H, N)
        C = C.reshape(b, t, self.n_groups, self.state_size).repeat_interleave(per_group, dim=2)
        dt = F.softplus(dt.float() + self.dt_bias.float()).clamp(min=self.time_step_min)  # (b, T, H)
        A = -self.A_log.float().exp()  # (H,)
        if ssm_state is not None and t == 1:
            y, ssm_state = ssd_step(x[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], ssm_state)
            y = y[:, None]
        else:
            if ssm_state is None:
                ssm_state = x.new_zeros(b, self.num_heads, self.head_dim, self.state_size)
            y, ssm_state = ssd_chunked(x, dt, A, B, C, self.chunk_size, ssm_state)
        return y + x * self.D.float()[:, None], conv_state, ssm_state

    def _conv(self, xbc: Tensor, state: Tensor | None) -> tuple[Tensor, Tensor]:
        """Causal depthwise conv + SiLU over (b, conv_dim, T) continuing from the window `state`
        (b, conv_dim, K - 1) (None: zeros) -> output (b, conv_dim, T), the new window (fp32)."""
        width = self.conv1d.kernel_size[0] - 1
        if state is None:
            window = F.pad(xbc, (width, 0))
        else:
            window = torch.cat([state.to(xbc.dtype), xbc], dim=-1)  # (b, C, K - 1 + T)
        if xbc.shape[-1] == 1:  # one token (decoding): a product and a sum, far cheaper than conv1d's setup
            out = (window * self.conv1d.weight[:, 0]).sum(-1, keepdim=True)
            if self.conv1d.bias is not None:
                out = out + self.conv1d.bias[:, None]
        else:
            out = F.conv1d(window, self.conv1d.weight, self.conv1d.bias, groups=self.conv_dim)
        return F.silu(out), window[:, :, window.shape[-1] - width:].float()


class Attention(nn.Module):
    """Grouped-query attention without positional encoding."""

    def __init__(self, config: NemotronHConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.kv_index = config.layer_types[:layer_idx].count(ATTENTION)  # its K/V among the attention layers'
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_heads, config.num_kv_heads, config.head_dim
        h = config.hidden_size
        self.q_proj = nn.Linear(h, self.num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(h, self.num_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(h, self.num_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, h, bias=False)

    def forward(self, x: Tensor, cache: HybridCache | None) -> Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.num_heads, self.head_dim)  # (B, T, Hq, D)
        k = self.k_proj(x).view(b, t, self.num_kv_heads, self.head_dim)  # (B, T, Hkv, D)
        v = self.v_proj(x).view(b, t, self.num_kv_heads, self.head_dim)
        out = causal_attention(q, k, v) if cache is None else cache.attend(self.kv_index, q, k, v)
        return self.o_proj(out.reshape(b, t, self.num_heads * self.head_dim))


class MLP(nn.Module):
    def __init__(self, config: NemotronHConfig) -> None:
        super().__init__()
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: Tensor, cache: HybridCache | None = None) -> Tensor:
        return self.down_proj(F.relu(self.up_proj(x)).square())


class NemotronHBlock(nn.Module):
    """x + mixer(RMSNorm(x)), the mixer chosen by the layer's type."""

    def __init__(self, config: NemotronHConfig, layer_idx: int) -> None:
        super().__init__()
        self.block_type = config.layer_types[layer_idx]
        self.norm = RMSNorm(config.hidden_size, config.norm_eps)
        mixers = {MAMBA: Mamba2Mixer, ATTENTION: Attention}
        self.mixer = mixers[self.block_type](config, layer_idx) if self.block_type in mixers else MLP(config)

    def forward(self, x: Tensor, cache: HybridCache | None) -> Tensor:
        return x + self.mixer(self.norm(x), cache)


class NemotronHModel(nn.Module):
    def __init__(self, config: NemotronHConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(NemotronHBlock(config, i) for i in range(config.num_layers))
        self.norm_f = RMSNorm(config.hidden_size, config.norm_eps)

    def forward(self, input_ids: Tensor, positions: Tensor | None = None, cache: HybridCache | None = None) -> Tensor:
        """input_ids (B, T) -> final-normed hidden (B, T, H). `positions` is unused (no positional
        encoding; the caches know how far each sequence has read): the engine's call signature."""
        x = self.embeddings(input_ids)  # (B, T, H)
        for layer in self.layers:
            x = layer(x, cache)
        return self.norm_f(x)


class NemotronHForCausalLM(nn.Module):
    def __init__(self, config: NemotronHConfig) -> None:
        super().__init__()
        self.config = config
        self.model = NemotronHModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    def forward(self, input_ids: Tensor, positions: Tensor | None = None, cache: HybridCache | None = None,
                last_only: bool = False) -> Tensor:
        """input_ids (B, T) continuing what `cache` has seen -> logits (B, T, V), or (B, 1, V).

        `positions` is accepted for the engine's call signature and unused: there is no positional
        encoding, and the cache knows how far each layer has read."""
        hidden = self.model(input_ids, positions, cache)
        if last_only:
            hidden = hidden[:, -1:]
        return self.lm_head(hidden)


# The language models: what generates text (the rest are reward models).
CAUSAL_LMS = (NemotronForCausalLM, NemotronHForCausalLM)


def sanitize_name(name: str) -> str:
    """NVIDIA's original exports name the trunk `backbone.`; transformers names it `model.`."""
    return "model." + name.removeprefix("backbone.") if name.startswith("backbone.") else name


@torch.no_grad()
def init_random_weights(model: NemotronHForCausalLM, seed: int = 0, std: float = 0.02) -> None:
    """Small random projections; norms at 1, Mamba A/D/dt_bias at their usual initial values."""
    generator = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        if name.endswith(("norm.weight", "norm_f.weight", "A_log", ".D", "dt_bias")) or name.endswith(".bias"):
            continue
        param.copy_(torch.randn(param.shape, generator=generator) * std)
