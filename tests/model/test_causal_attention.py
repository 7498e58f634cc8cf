"""Prompt chunks after cached keys: the lower-right causal path CUDA takes (flash or memory-efficient
kernels through torch's causal bias, KV heads repeated) against the explicit mask the CPU uses."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nemotron.model.nemotron import causal_attention, lower_right_causal_attention

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def masked(q, k, v):
    """q (B, Hq, Tq, D), k/v (B, Hkv, Tk, D): query i sees keys 0 .. Tk - Tq + i, by an explicit mask."""
    t_q, t_k = q.shape[2], k.shape[2]
    mask = torch.arange(t_k)[None, :] <= torch.arange(t_q)[:, None] + (t_k - t_q)
    return F.scaled_dot_product_attention(q.cpu().float(), k.cpu().float(), v.cpu().float(), attn_mask=mask,
                                          enable_gqa=True)


@pytest.mark.parametrize("heads, kv_heads", [(4, 4), (6, 2), (8, 1)])
@pytest.mark.parametrize("t_q, t_k", [(2, 3), (5, 17), (16, 40)])
def test_lower_right_causal_attention_matches_the_mask(heads, kv_heads, t_q, t_k):
    gen = torch.Generator().manual_seed(heads * 100 + t_k)
    dtype = torch.bfloat16 if DEVICE == "cuda" else torch.float32  # the flash kernel on GPUs
    q = torch.randn(2, heads, t_q, 64, generator=gen).to(DEVICE, dtype)
    k, v = (torch.randn(2, kv_heads, t_k, 64, generator=gen).to(DEVICE, dtype) for _ in range(2))
    tolerance = 2e-2 if dtype == torch.bfloat16 else 1e-5
    expected = masked(q, k, v)
    torch.testing.assert_close(lower_right_causal_attention(q, k, v).cpu().float(), expected,
                               atol=tolerance, rtol=tolerance)
    # causal_attention's layout (B, T, H, D), with the cached part of the keys first
    got = causal_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), past_len=t_k - t_q)
    torch.testing.assert_close(got.transpose(1, 2).cpu().float(), expected, atol=tolerance, rtol=tolerance)


def test_query_i_sees_the_cached_keys_and_itself_only():
    """One-hot values: each query's output is the mean of the values it may see (all scores equal)."""
    t_q, t_k = 3, 7
    q = torch.zeros(1, 2, t_q, 16, device=DEVICE)
    k = torch.zeros(1, 1, t_k, 16, device=DEVICE)
    v = torch.eye(t_k, 16, device=DEVICE)[None, None]
    out = lower_right_causal_attention(q, k, v)[0, 0].cpu()  # (Tq, 16)
    for i in range(t_q):
        seen = t_k - t_q + i + 1
        assert torch.allclose(out[i, :t_k], torch.tensor([1 / seen] * seen + [0.0] * (t_k - seen)), atol=1e-6)
