"""Small CPU decode attention and sampling run on one intra-op thread: same numbers, thread count restored."""
from __future__ import annotations

import torch

from nemotron.engine.paged_cache import SERIAL_DECODE_KEYS, OneThread, decode_attention


def test_one_thread_restores_the_thread_count():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with OneThread():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_serial_and_threaded_decode_attention_agree():
    torch.manual_seed(0)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for batch, width in ((1, 48), (3, SERIAL_DECODE_KEYS // 3 + 16)):  # one thread, then the team
            q = torch.randn(1, batch, 8, 32, dtype=torch.bfloat16)
            k, v = (torch.randn(batch, 2, width, 32, dtype=torch.bfloat16) for _ in range(2))
            mask = torch.zeros(batch, 1, 1, width, dtype=torch.bfloat16)
            mask[0, ..., width // 2:] = float("-inf")
            out = decode_attention(q, k, v, mask)
            with OneThread():
                serial = decode_attention(q, k, v, mask)
            rows = q[0].reshape(batch, 2, 4, 32)
            reference = torch.nn.functional.scaled_dot_product_attention(rows.float(), k.float(), v.float(),
                                                                         attn_mask=mask.float())
            assert torch.equal(out, serial)
            torch.testing.assert_close(out.float(), reference.reshape(1, batch, 8, 32), atol=2e-2, rtol=2e-2)
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
