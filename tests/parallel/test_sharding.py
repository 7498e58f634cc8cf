"""What each rank holds and reads: its shard only (bytes ≈ 1/TP of the sharded weights), read as
slices (never a whole sharded tensor), and two all-reduces per layer in the forward pass."""
from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from nemotron.checkpoint import hf
from nemotron.checkpoint.load import load_model
from nemotron.parallel import ParallelLayout, load_sharded, shard_bytes, shard_plan
from nemotron.parallel.tensor import REPLICATED
from tests.parallel.launch import run_ranks


class CountingSafeOpen:
    """safe_open that records the elements read per tensor and forbids whole-tensor reads."""

    def __init__(self, path, framework):
        self.handle = _REAL_SAFE_OPEN(path, framework=framework)

    def keys(self):
        return self.handle.keys()

    def get_tensor(self, name):
        raise AssertionError(f"whole-tensor read of {name}")

    def get_slice(self, name):
        return CountingSlice(name, self.handle.get_slice(name))


class CountingSlice:
    def __init__(self, name, part):
        self.name, self.part = name, part

    def get_shape(self):
        return self.part.get_shape()

    def __getitem__(self, index):
        tensor = self.part[index]
        READS.setdefault(self.name, []).append(tensor.numel())
        return tensor


_REAL_SAFE_OPEN = hf.safe_open
READS: dict[str, list[int]] = {}


def _load_and_measure(rank, world, path):
    layout = ParallelLayout.from_world(world)
    hf.safe_open = CountingSafeOpen  # this forked rank only
    calls = []
    try:
        model = load_sharded(path, layout, progress=lambda done, total: calls.append((done, total))).model
    finally:
        hf.safe_open = _REAL_SAFE_OPEN
    whole = load_model(path).model  # unsharded, for the sizes only
    plan = shard_plan(whole, layout)
    sharded = {n for n, s in plan.items() if s is not REPLICATED}
    mine = model.state_dict()
    full = whole.state_dict()
    assert calls[-1] == (len(model.state_dict()), len(model.state_dict())) and len(calls) == calls[-1][0]
    calls = []
    original = dist.all_reduce

    def counting(tensor, *args, **kwargs):
        calls.append(tuple(tensor.shape))
        return original(tensor, *args, **kwargs)

    dist.all_reduce = counting
    try:
        with torch.no_grad():
            model.model(torch.tensor([[3, 4, 5]]), torch.arange(3)[None])
    finally:
        dist.all_reduce = original
    return {
        "sharded_bytes": sum(mine[n].numel() * mine[n].element_size() for n in sharded),
        "full_sharded_bytes": sum(full[n].numel() * full[n].element_size() for n in sharded),
        "replicated_equal": all(torch.equal(mine[n], full[n]) for n in plan if n not in sharded),
        "total_bytes": shard_bytes(model),
        "reads": dict(READS),
        "full_numel": {n: t.numel() for n, t in full.items()},
        "sharded": sharded,
        "all_reduces": len(calls),
    }


@pytest.mark.parametrize("tp", [2, 4])
def test_each_rank_holds_and_reads_only_its_shard(tmp_path, tiny_model_dir, tp):
    results = run_ranks(_load_and_measure, tp, tmp_path / "run", str(tiny_model_dir))
    layers = 2
    for result in results:
        # k/v: one of 2 KV heads per rank at TP 4 (replicated in pairs), 1/TP of everything else
        kv_bytes = sum(result["full_numel"][n] * 4 for n in result["sharded"] if n.endswith(("k_proj.weight",
                                                                                               "v_proj.weight")))
        kv_share = max(1 / tp, 1 / 2)
        assert result["sharded_bytes"] == (result["full_sharded_bytes"] - kv_bytes) // tp + int(kv_bytes * kv_share)
        assert result["replicated_equal"]
        for name in result["sharded"]:
            stored = name
            if name.endswith(("k_proj.weight", "v_proj.weight")):
                assert sum(result["reads"][stored]) == result["full_numel"][name] * kv_share, name
            elif "_proj" in name:
                assert sum(result["reads"][stored]) == result["full_numel"][name] // tp, name
            else:  # embedding / lm_head: one vocabulary partition
                assert sum(result["reads"][stored]) == result["full_numel"][name] // tp, name
        # two per layer (o_proj, down_proj) plus the vocabulary-parallel embedding
        assert result["all_reduces"] == 2 * layers + 1
    # sharded weights dominate: every rank holds well under half the model at TP 2
    assert results[0]["total_bytes"] < sum(results[0]["full_numel"].values()) * 4 * (0.5 if tp == 2 else 0.3) + 4096
