"""The engine's per-sequence state of a hybrid (Nemotron-H) model's Mamba layers, beside the paged KV
cache of its attention layers.

A Mamba layer keeps a constant-size state per sequence instead of K/V per token: the last K - 1 conv
inputs and the SSM state (heads x head_dim x state_size), both fp32. The pool holds `num_slots`
such states for every Mamba layer; the scheduler gives each running sequence one slot (`StateSlots`)
when it admits it and takes it back when the sequence finishes or is preempted (recompute then
rebuilds the state from the first token, like the K/V). Each step's `BatchLayout` carries the slot of
every chunk; the Mamba mixers reach the pool through the paged cache's `mamba` hook, which runs all
one-token rows as one batch and every longer chunk (a prefill, or the next chunk of one) on its own,
each from its slot's state (zeros for a chunk starting at position 0) and back into it.

Prefix caching stays off for these models: reusing cached K/V blocks would also need the Mamba state
at the end of the shared prefix, which is not kept per block.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from nemotron.model.nemotron_h import MixFn
from nemotron.model.nemotron_h_config import ATTENTION, MAMBA, NemotronHConfig

PREFIX_CACHING_OFF = ("prefix caching is off for hybrid Mamba models: the Mamba state at the end of a shared "
                      "prefix is not kept per KV block, so a cached prefix cannot be resumed exactly")


@dataclass(slots=True, frozen=True)
class AttentionLayers:
    """A hybrid model's attention layers as the paged KV cache sizes them (what it reads of a ModelConfig)."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    max_position_embeddings: int

    @classmethod
    def of(cls, config: NemotronHConfig) -> AttentionLayers:
        return cls(config.count(ATTENTION), config.num_kv_heads, config.head_dim, config.max_position_embeddings)


class StateSlots:
    """Which state slots are free: the scheduler's side of the pool (plain numbers, no tensors)."""

    def __init__(self, num_slots: int) -> None:
        if num_slots < 1:
            raise ValueError("a hybrid model needs at least one state slot")
        self.num_slots = num_slots
        self._free = list(range(num_slots - 1, -1, -1))  # pop() hands out slot 0 first

    @property
    def num_free(self) -> int:
        return len(self._free)

    def allocate(self) -> int:
        if not self._free:
            raise RuntimeError("no free Mamba state slot; the scheduler must check num_free first")
        return self._free.pop()

    def free(self, slot: int) -> None:
        if slot in self._free or not 0 <= slot < self.num_slots:
            raise RuntimeError(f"state slot {slot} freed twice or never allocated")
        self._free.append(slot)


class MambaStatePool:
    """The states themselves: (Mamba layers, slots, ...) fp32 tensors on the model's device."""

    def __init__(self, config: NemotronHConfig, num_slots: int, device: torch.device | str) -> None:
        layers = config.count(MAMBA)
        self.num_slots = num_slots
        self._layout, self._step = None, None  # the step being run and where its chunks' rows are
        self.conv = torch.zeros(layers, num_slots, config.conv_dim, config.conv_kernel - 1, device=device)
        self.ssm = torch.zeros(layers, num_slots, config.mamba_num_heads, config.mamba_head_dim,
                               config.ssm_state_size, device=device)

    @staticmethod
    def bytes_per_slot(config: NemotronHConfig) -> int:
        return config.mamba_state_bytes_per_sequence()

    def nbytes(self) -> int:
        return (self.conv.numel() + self.ssm.numel()) * 4

    def run(self, layout, state_index: int, mix: MixFn, xbc: Tensor, dt: Tensor) -> Tensor:
        """One Mamba layer over a step's flattened batch: xbc (1, T, conv_dim), dt (1, T, H), rows of the
        chunks in `layout` order -> y (1, T, H, P) fp32; every chunk's slot holds its state afterwards."""
        if self._layout is not layout:  # once per step, shared by every Mamba layer
            self._layout, self._step = layout, _StepRows.of(layout, xbc.device)
        step = self._step
        conv, ssm = self.conv[state_index], self.ssm[state_index]  # (slots, ...)
        out = None
        if step.single_rows is not None:  # decode rows (and one-token chunks): one batched step from their slots
            conv_in, ssm_in = conv[step.single_slots], ssm[step.single_slots]  # gathered copies
            if step.fresh:
                conv_in[step.fresh] = 0
                ssm_in[step.fresh] = 0
            y, conv_out, ssm_out = mix(xbc[0, step.single_rows][:, None], dt[0, step.single_rows][:, None],
                                       conv_in, ssm_in)
            conv.index_copy_(0, step.single_slots, conv_out)
            ssm.index_copy_(0, step.single_slots, ssm_out)
            out = y.new_empty(xbc.shape[1], *y.shape[2:])  # (T, H, P)
            out.index_copy_(0, step.single_rows, y[:, 0])
        for slot, rows, fresh in step.chunks:  # prefill chunks, each on its own
            state = (None, None) if fresh else (conv[slot:slot + 1], ssm[slot:slot + 1])
            y, conv[slot:slot + 1], ssm[slot:slot + 1] = mix(xbc[:, rows], dt[:, rows], *state)
            if out is None:
                out = y.new_empty(xbc.shape[1], *y.shape[2:])
            out[rows] = y[0]
        return out[None]


@dataclass(slots=True)
class _StepRows:
    """Where a step's chunks sit in the flattened batch, for the Mamba layers."""

    single_rows: Tensor | None  # rows of the one-token chunks
    single_slots: Tensor | None  # their slots
    fresh: list[int]  # which of them start a sequence (state from zeros)
    chunks: list[tuple[int, slice, bool]]  # longer chunks: slot, rows, starts a sequence

    @classmethod
    def of(cls, layout, device: torch.device) -> _StepRows:
        lens, slots = layout.query_lens, layout.state_slots
        starts = [c - n for c, n in zip(layout.context_lens_host, lens)]
        first = [0]
        for n in lens[:-1]:
            first.append(first[-1] + n)
        single = [i for i, n in enumerate(lens) if n == 1]
        rows = torch.tensor([first[i] for i in single], device=device) if single else None
        index = torch.tensor([slots[i] for i in single], device=device) if single else None
        fresh = [j for j, i in enumerate(single) if starts[i] == 0]
        chunks = [(slots[i], slice(first[i], first[i] + n), starts[i] == 0) for i, n in enumerate(lens) if n != 1]
        return cls(rows, index, fresh, chunks)
