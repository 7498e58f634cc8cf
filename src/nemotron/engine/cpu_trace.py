"""CPU decode steps replayed from a TorchScript trace of the model's trunk: the CPU's counterpart of
the CUDA graphs (engine.cuda_graphs), for steps that decode up to `MAX_TRACED_LANES` sequences.

At a few rows a decode step of a small model is bound by host work, not by the matmuls: the 140M
shape's bf16 step makes ~420 ATen calls, each through Python and torch's argument parsing, while
the other intra-op thread spins between the matmuls. A trace records the step's ATen calls once and
replays them from TorchScript's interpreter, in C++: the same model code, recorded, not a second copy
of it. One trace per number of decoding sequences, made once that many have decoded together for
`TRACE_AFTER_STEPS` steps (counted over the engine's life). A trace costs more than a short
generation gains from it: it takes 0.12-0.3 s and saves 0.2-0.5 ms a step (the demo model: 1.23-1.29
against 1.40-1.73 ms), so it pays back after some 500-1,000 steps of its row count. Tracing at the
first step, 16 requests of 16-64 new tokens on the small shape ran at 268 tok/s against 487 eagerly
(8 traces for 11 replayed steps), and the demo model's 200-token generation at 313-405 against
521-675. Waiting as many steps as a trace is worth (the ski rental's rule) costs at most about twice
the better of the two choices made in hindsight.

What a replay reads as inputs and what the trace holds fixed:
- inputs: token ids, positions, and the decode workspace's tensors of the step (each row's mask, the
  rows its new keys go to, every layer's lane views and flat views), which change from step to step
  and when the lanes grow; and the prepacked oneDNN weights (opaque tensors, which a trace can
  neither hold as constants nor read as the plain attributes they are);
- module attributes: parameters and torchbind objects (fbgemm's packed int8 weights), read at each
  replay, as the trunk is traced as a submodule;
- held: every other tensor the forward reads (derived norm scales, the rotary table), by
  reference, and every Python decision (which path `attend` takes for all-lane rows, the
  kernel a linear layer picks for its row count), which depend only on the number of rows.
Attention runs on the whole thread team in a replay (eager batch-1 steps run it on one thread,
`paged_cache.OneThread`, a Python-side switch a trace does not record); with spinning OpenMP threads
the team is the faster of the two anyway (192 keys: 18 against 29 us). The bits are the same: SDPA's
multi-row path sums alike on any number of threads, and a lone query row per KV head (multi-head
attention) goes in as two (`paged_cache.decode_attention`), as the one-row path's fp32 sums do not.

Steps of a model with forward hooks set (on any of its modules, or global ones) run eagerly, hooks
and all. A sharded model (process groups) decodes eagerly, as does a step the tracer cannot record
and a first replay whose output differs from the eager forward it was recorded from (checked bit
for bit, once per trace). torch 2.13 marks `torch.jit.trace` deprecated: it is what replays a CPU
op sequence without Python today (torch.compile measured slower here; README, CPU path).
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch
from torch import Tensor, nn
from torch.nn.modules import module as module_hooks

from nemotron.engine.paged_cache import BatchLayout, PagedKVCache

MAX_TRACED_LANES = 8  # the small batches, where host work is a large part of a step (one trace per row count)
TRACE_AFTER_STEPS = 512  # eager steps of a row count before it is traced (module docstring)


def untraceable_reason(model: nn.Module) -> str | None:
    """Why `model`'s forward is not traced (None when it is): a process group among its modules' state
    (a sharded model's collectives: a trace that failed half-way would have run some of them on this
    rank only)."""
    groups = (torch.distributed.ProcessGroup,) if torch.distributed.is_available() else ()
    for name, module in model.named_modules():
        for attribute, value in vars(module).items():
            if isinstance(value, groups):
                return f"{name}.{attribute} is a process group: a sharded model's collectives are not traced"
    return None


def simplify(graph: torch.Graph) -> None:
    """In place, TorchScript's own passes (those `torch.jit.freeze` runs): the trunk's calls inlined
    into one graph (a traced submodule is one call; each prepacked linear layer is a call of a scripted
    function), and the tracer's shape arithmetic folded or shared where its inputs are constants
    (140M shape: ~960 nodes inlined, ~640 after folding; a replay 3-4% faster than the traced call).
    Shape peepholes stay off: they would fold sizes of the traced example, which change from step to step."""
    torch._C._jit_pass_inline(graph)
    torch._C._jit_pass_constant_propagation(graph)
    torch._C._jit_pass_peephole(graph, True)  # disable_shape_peepholes
    torch._C._jit_pass_cse(graph)
    torch._C._jit_pass_dce(graph)


class _Step(nn.Module):
    """What is traced: the trunk as a submodule, so that the tracer reads its parameters and its
    torchbind objects (fbgemm's packed int8 weights) as module attributes, which a traced function
    cannot take. The cache is an object, not an input: the step's tensors of it are the inputs."""

    def __init__(self, trunk: nn.Module, kv_cache: PagedKVCache) -> None:
        super().__init__()
        self.trunk = trunk
        self.kv_cache = kv_cache
        self.recorded: Tensor | None = None  # the output of the eager run the tracer recorded

    def forward(self, input_ids: Tensor, positions: Tensor, *_: Tensor) -> Tensor:
        self.recorded = self.trunk(input_ids, positions, self.kv_cache)
        return self.recorded


class TracedDecode:
    def __init__(self, trunk: nn.Module, kv_cache: PagedKVCache) -> None:
        self.step = _Step(trunk, kv_cache)  # trunk: NemotronModel, (input_ids, positions, cache) -> hidden (1, T, H)
        self.traces: dict[int, Callable[..., Tensor]] = {}  # number of decoding rows -> replay
        # Graph inputs at every replay besides the step's: the opaque (oneDNN-layout) weights, which a
        # trace can neither hold as constants nor read as attributes (they are plain attributes).
        self.held = [value for module in trunk.modules() for value in vars(module).values()
                     if isinstance(value, Tensor) and value.is_mkldnn]
        self.off_reason: str | None = untraceable_reason(trunk)
        # Every module's hook dicts, which each step looks into (nn.Module adds to them, never replaces
        # them): ~5 us a step, where reading them through each module took ~95 on the 140M shape.
        self.hook_dicts = [d for m in trunk.modules() for d in (m._forward_hooks, m._forward_pre_hooks)]
        self.replays = 0  # steps served by a replay
        self.eager_steps: dict[int, int] = {}  # row count -> eager steps run before its trace

    def fits(self, layout: BatchLayout, rows: int) -> bool:
        """Every row of the step decodes from its lane, there are few enough of them, and no forward
        hook is set (Python, which a replay would skip: a hook registered later is still honoured)."""
        lanes = layout.lanes
        return (self.off_reason is None and lanes is not None and lanes.num_lanes == rows
                and rows <= MAX_TRACED_LANES and not self._hooked())

    def _hooked(self) -> bool:
        if module_hooks._global_forward_hooks or module_hooks._global_forward_pre_hooks:
            return True
        return any(self.hook_dicts)

    def forward(self, input_ids: Tensor, positions: Tensor) -> Tensor:
        """The trunk's hidden states (1, T, H) for the step whose layout the cache uses: replayed, or
        eager while its row count has run fewer than TRACE_AFTER_STEPS steps, or traced then."""
        rows = input_ids.shape[1]
        replay = self.traces.get(rows)
        seen = self.eager_steps.get(rows, 0)
        if replay is None and seen < TRACE_AFTER_STEPS:
            self.eager_steps[rows] = seen + 1
            return self.step.trunk(input_ids, positions, self.step.kv_cache)
        inputs = self._inputs(input_ids, positions)
        if replay is None:
            return self._trace(inputs)
        try:
            with torch.jit.optimized_execution(False):  # the graph as recorded: no profiling runs, no re-specialising
                hidden = replay(*inputs)
        except RuntimeError as error:
            return self._eager(inputs, f"a replay failed: {error}")
        self.replays += 1
        return hidden

    def _inputs(self, input_ids: Tensor, positions: Tensor) -> tuple[Tensor, ...]:
        cache = self.step.kv_cache
        lanes = cache.layout.lanes
        views = [t for pair in lanes.views for t in pair]
        flats = [t for pair in cache.workspace.flat for t in pair]
        return (input_ids, positions, lanes.mask, lanes.write_index, *views, *flats, *self.held)

    def _trace(self, inputs: tuple[Tensor, ...]) -> Tensor:
        """Record the step (its eager forward), replay it once on the same inputs and keep the trace if
        the replay is the same bit for bit. Otherwise the step is run eagerly once more: the replay wrote
        its own keys and values to the step's lane rows, and the eager ones must be what stays."""
        try:
            with warnings.catch_warnings():  # deprecation, and the tracer's notes on the Python decisions it fixes
                warnings.simplefilter("ignore")
                replay = torch.jit.trace(self.step, inputs, check_trace=False)
            simplify(replay.graph)
            with torch.jit.optimized_execution(False):
                replayed = replay(*inputs)
        # Anything the tracer cannot record, and TorchScript's own failures (plain Exceptions: its frontend
        # reads the source of the scripted oneDNN call, which a source-less install or a file changed since
        # import does not give it); a genuine error of the model is raised again by the eager step.
        except Exception as error:  # noqa: BLE001
            return self._eager(inputs, f"the step could not be traced: {error}")
        finally:
            recorded, self.step.recorded = self.step.recorded, None
        if self._same(replayed, recorded):
            self.traces[inputs[0].shape[1]] = replay
            return recorded
        return self._eager(inputs, "a replay differed from the forward it was traced from")

    def _eager(self, inputs: tuple[Tensor, ...], reason: str) -> Tensor:
        """Tracing off for good (`reason`, its first line) and the step run eagerly: its keys and values
        are what the lanes keep, over any a replay wrote to the same rows."""
        self.off_reason = reason.splitlines()[0]
        return self.step.trunk(inputs[0], inputs[1], self.step.kv_cache)

    @staticmethod
    def _same(replayed: Tensor, recorded: Tensor) -> bool:
        return torch.equal(replayed, recorded)

