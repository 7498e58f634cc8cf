"""Small CPU decode attention and sampling run on one intra-op thread: same numbers, thread count restored."""
from __future__ import annotations

import threading

import pytest
import torch

from nemotron.engine import paged_cache
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


def test_one_thread_restores_the_thread_count_after_an_exception():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(RuntimeError), OneThread():
            raise RuntimeError("inside the window")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_small_decode_attention_switches_to_one_thread_and_large_does_not(monkeypatch):
    calls: list[int] = []
    real = torch.set_num_threads
    monkeypatch.setattr(paged_cache.torch, "set_num_threads", lambda n: (calls.append(n), real(n)))
    before = torch.get_num_threads()
    real(2)
    try:
        for batch, width, expected in ((1, 48, [1, 2]), (3, SERIAL_DECODE_KEYS // 3 + 16, [])):
            calls.clear()
            q = torch.randn(1, batch, 8, 32)
            k, v = (torch.randn(batch, 2, width, 32) for _ in range(2))
            decode_attention(q, k, v, torch.zeros(batch, 1, 1, width))
            assert calls == expected
    finally:
        real(before)


def test_a_thread_that_reads_its_count_first_keeps_it_through_another_threads_window():
    """Why the engine's threads call torch.get_num_threads() first thing: a thread's count is copied
    from the process-wide one at its first torch work, which OneThread lowers for its window."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    seen: dict[bool, int] = {}

    def worker(read_first: bool, started: threading.Event, window: threading.Event, worked: threading.Event,
               done: threading.Event):
        if read_first:
            torch.get_num_threads()
        started.set()
        window.wait()
        torch.randn(1 << 16).exp_().sum()  # first torch work, inside the other thread's window
        worked.set()
        done.wait()
        seen[read_first] = torch.get_num_threads()

    try:
        for read_first in (False, True):
            started, window, worked, done = (threading.Event() for _ in range(4))
            thread = threading.Thread(target=worker, args=(read_first, started, window, worked, done))
            thread.start()
            started.wait(10)
            with OneThread():
                window.set()
                worked.wait(10)
            done.set()
            thread.join(10)
        assert seen == {False: 1, True: 2}
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
            out = decode_attention(q, k, v, mask)  # one thread for the small case, the team for the large
            rows = q[0].reshape(batch, 2, 4, 32)
            with OneThread():
                serial = torch.nn.functional.scaled_dot_product_attention(rows, k, v, attn_mask=mask)
            threaded = torch.nn.functional.scaled_dot_product_attention(rows, k, v, attn_mask=mask)
            serial, threaded = serial.reshape(1, batch, 8, 32), threaded.reshape(1, batch, 8, 32)
            reference = torch.nn.functional.scaled_dot_product_attention(rows.float(), k.float(), v.float(),
                                                                         attn_mask=mask.float())
            assert torch.equal(out, serial) and torch.equal(out, threaded)
            torch.testing.assert_close(out.float(), reference.reshape(1, batch, 8, 32), atol=2e-2, rtol=2e-2)
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
