"""Read parts of a NeMo checkpoint's tensors under Hugging Face names, for tensor/pipeline-parallel
loading: a rank reads its slices only, from any of the three weight layouts.

- per-rank `model_weights.ckpt`: the files together form one virtual tensor per name (TP shards
  concatenated along `megatron.tp_split_dim`, stages' layers renumbered globally). A slice is cut
  from the files that hold it, memory-mapped, so when the checkpoint's TP/PP equals the run's each
  rank's slices fall inside its own file and only that file is read (matching layouts are used
  directly); otherwise they are resharded from the pieces of the files that cover them;
- zarr: only the chunks overlapping the slice are decoded;
- torch_dist: `torch.distributed.checkpoint` reads the slice's region.
The fused QKV (rows grouped per KV group) is read as the q, k or v rows a rank asks for.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from nemotron.checkpoint import megatron, nemo
from nemotron.checkpoint.archive import open_archive
from nemotron.errors import CheckpointError
from nemotron.model.config import ModelConfig
from nemotron.tokenizer import Tokenizer

Bounds = list[tuple[int, int]]  # [start, stop) per dimension


@contextlib.contextmanager
def open_nemo_slices(path: Path, trust_pickle: bool, home: tuple[int, int] = (0, 0)
                     ) -> Iterator[tuple[ModelConfig, NemoSlices, Tokenizer | None]]:
    """Open a NeMo checkpoint for sliced reads. `home` is the reading rank's (tp_rank, stage): with
    per-rank files, replicated tensors (norms) come from its own file when the checkpoint has one.
    A `.nemo` archive is read in place (`checkpoint/archive.py`); from an archive a per-rank file is
    read whole (a member cannot be memory-mapped), so extract big archives to reshard them."""
    if path.is_dir():
        yield _open_root(path, str(path), trust_pickle, home)
        return
    if not path.is_file():
        raise CheckpointError(f"no NeMo checkpoint at {path}")
    with open_archive(path) as archive:
        yield _open_root(archive.root, str(path), trust_pickle, home)


def _open_root(root: Path, origin: str, trust_pickle: bool, home: tuple[int, int]
               ) -> tuple[ModelConfig, NemoSlices, Tokenizer | None]:
    raw = nemo._read_yaml(root / "model_config.yaml", origin)
    tokenizer_model, _ = nemo._tokenizer(root, raw, origin)
    stored = _open_stored(root, origin, raw, trust_pickle, home)
    config = nemo._config(raw, nemo._Weights(stored.shapes, stored.load_whole), origin)
    megatron.check_stored_shapes(stored.shapes, config)  # before any tensor is read
    tokenizer = Tokenizer.from_sentencepiece_bytes(tokenizer_model) if tokenizer_model else None
    return config, NemoSlices(stored, config, origin), tokenizer


class StoredTensors:
    """Megatron tensors by stored name (global layer numbers): merged shapes and region reads.
    `used_files` records the per-rank files (tp, stage) whose tensor data was read."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], region: Callable[[str, Bounds], Tensor]) -> None:
        self.shapes, self.region = shapes, region
        self.used_files: set[tuple[int, int]] = set()

    def load_whole(self, name: str) -> Tensor:
        return self.region(name, [(0, n) for n in self.shapes[name]])


class NemoSlices:
    """The `SliceSource` of a NeMo checkpoint: Hugging Face names in, slices of stored tensors out."""

    def __init__(self, stored: StoredTensors, config: ModelConfig, origin: str) -> None:
        self.stored, self.config, self.origin = stored, config, origin
        self._names: dict[str, str] = {}  # HF name (q/k/v as the fused name) -> stored name
        for name in stored.shapes:
            hf_name = megatron.to_hf_name(name)
            if hf_name is not None:
                self._names.setdefault(hf_name, name)

    def _stored(self, hf_name: str) -> tuple[str, str | None]:
        """(stored name, q/k/v part or None)."""
        stem, _, last = hf_name.rpartition("self_attn.")
        part = last[0] if last in ("q_proj.weight", "k_proj.weight", "v_proj.weight") else None
        key = stem + megatron.FUSED_QKV if part else hf_name
        if key not in self._names:
            raise CheckpointError(f"{self.origin} has no tensor for {hf_name} "
                                  f"({megatron.to_megatron_name(key) if key.startswith('model.') else key})")
        return self._names[key], part

    def shape(self, hf_name: str) -> tuple[int, ...]:
        name, part = self._stored(hf_name)
        shape = self.stored.shapes[name]
        if part is None:
            return shape
        if tuple(shape) != megatron.fused_qkv_shape(self.config):
            raise CheckpointError(f"{self.origin}: tensor {name!r} has shape {tuple(shape)}, the config "
                                  f"expects {megatron.fused_qkv_shape(self.config)}")
        heads = self.config.num_heads if part == "q" else self.config.num_kv_heads
        return (heads * self.config.head_dim, shape[1])

    def read(self, hf_name: str, rows: tuple[tuple[int, int], ...] | None = None,
             cols: tuple[int, int] | None = None) -> Tensor:
        name, part = self._stored(hf_name)
        if part is not None:
            rows = qkv_rows(part, rows or ((0, self.shape(hf_name)[0]),), self.config)
        shape = self.stored.shapes[name]
        rest = [(0, n) for n in shape[1:]]
        if cols is not None:
            rest[0] = cols
        parts = [self.stored.region(name, [r, *rest]) for r in (rows or ((0, shape[0]),))]
        return torch.cat(parts) if len(parts) > 1 else parts[0]


def qkv_rows(part: str, rows: tuple[tuple[int, int], ...], config: ModelConfig) -> tuple[tuple[int, int], ...]:
    """Rows of the q, k or v projection -> rows of Megatron's fused QKV, where KV group g holds its
    r query heads, then its key head, then its value head: ((heads + 2 groups) * D, H)."""
    r, d = config.kv_group_size, config.head_dim
    out: list[list[int]] = []
    for a, b in rows:
        if a % d or b % d:
            raise CheckpointError(f"{part}_proj rows {a}..{b} do not fall on head boundaries")
        for head in range(a // d, b // d):
            group, index = (head // r, head % r) if part == "q" else (head, r + (part == "v"))
            start = (group * (r + 2) + index) * d
            if out and out[-1][1] == start:
                out[-1][1] = start + d  # consecutive heads of one group: one contiguous read
            else:
                out.append([start, start + d])
    return tuple((a, b) for a, b in out)


# ---- the three layouts ------------------------------------------------------------------------
def _open_stored(root: Path, origin: str, raw: dict, trust_pickle: bool, home: tuple[int, int]) -> StoredTensors:
    sharded = root / "model_weights"
    if (sharded / "metadata.json").is_file():
        origin = f"{origin}/model_weights"
        backend = nemo._read_json(sharded / "metadata.json", f"{origin}/metadata.json").get("sharded_backend")
        layers = nemo._declared_layers(raw, origin)
        if backend == "zarr":
            return _zarr(sharded, origin, bf16="bf16" in str(raw.get("precision", "bf16")), layers=layers)
        if backend == "torch_dist":
            return _dcp(sharded, origin, trust_pickle, layers)
        raise CheckpointError(f"{origin}/model_weights/metadata.json has sharded_backend {backend!r}; "
                              f"supported: zarr, torch_dist")
    return _rank_files(root, origin, trust_pickle, home[0])


def _rank_files(root: Path, origin: str, trust_pickle: bool, home_tp: int) -> StoredTensors:
    files = nemo._rank_files(root, origin)
    tp_size, pp_size = max(k[0] for k in files) + 1, max(k[1] for k in files) + 1
    opened: dict[tuple[int, int], dict] = {}

    def load(key: tuple[int, int], fake: bool = False) -> dict:
        where = f"{origin}/{files[key].relative_to(root)}"
        if fake:  # names and shapes only: the pickled index is read, not the tensor data
            from torch._subclasses.fake_tensor import FakeTensorMode

            with FakeTensorMode():
                return nemo._torch_load(files[key], where, trust_pickle)
        if key not in opened:  # memory-mapped on first use; only the files a rank's slices lie in
            opened[key] = nemo._torch_load(files[key], where, trust_pickle)
        return opened[key]

    where: dict[str, tuple[int, str]] = {}  # global name -> (stage, name in the stage's files)
    shapes: dict[str, tuple[int, ...]] = {}
    index = [{name: tensor for name, tensor in load((min(home_tp, tp_size - 1), stage), fake=True).items()
              if isinstance(tensor, Tensor)} for stage in range(pp_size)]
    for stage, name, global_name in megatron.stage_names(index, origin):
        where[global_name] = (stage, name)
        shape, dim = list(index[stage][name].shape), megatron.tp_split_dim(name)
        if dim is not None:
            shape[dim] *= tp_size  # Megatron cuts a split tensor into equal parts
        shapes[global_name] = tuple(shape)

    def rank_tensor(key: tuple[int, int], local: str) -> Tensor:
        used_files.add(key)
        return nemo._rank_tensor({key: load(key)}, key, local, origin)

    def region(name: str, bounds: Bounds) -> Tensor:
        stage, local = where[name]
        dim = megatron.tp_split_dim(name)
        if dim is None or tp_size == 1:  # replicated: every file of the stage holds it, read this rank's
            return _own(_narrow(rank_tensor((min(home_tp, tp_size - 1), stage), local), bounds))
        per_rank = shapes[name][dim] // tp_size
        start, stop = bounds[dim]
        pieces = []
        for rank in range(start // per_rank, (stop - 1) // per_rank + 1):
            lo, hi = max(start, rank * per_rank), min(stop, (rank + 1) * per_rank)
            piece_bounds = list(bounds)
            piece_bounds[dim] = (lo - rank * per_rank, hi - rank * per_rank)
            pieces.append(_narrow(rank_tensor((rank, stage), local), piece_bounds))
        return torch.cat(pieces, dim) if len(pieces) > 1 else _own(pieces[0])

    used_files: set[tuple[int, int]] = set()
    stored = StoredTensors(shapes, region)
    stored.used_files = used_files
    return stored


def _own(tensor: Tensor) -> Tensor:
    """A part of a stored tensor is copied, so it does not keep the whole one alive; a whole one is
    returned as it is (a matching layout's tensors go straight from the file into the model)."""
    whole = tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()
    return tensor if whole and tensor.is_contiguous() else tensor.clone(memory_format=torch.contiguous_format)


def _narrow(tensor: Tensor, bounds: Bounds) -> Tensor:
    for dim, (start, stop) in enumerate(bounds):
        if (start, stop) != (0, tensor.shape[dim]):
            tensor = tensor.narrow(dim, start, stop - start)
    return tensor


def _zarr(directory: Path, origin: str, bf16: bool, layers: int) -> StoredTensors:
    arrays: dict[str, tuple[nemo._ZarrArray, int | None]] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for sub in sorted(p for p in directory.iterdir() if p.is_dir()):
        if megatron.is_skipped(sub.name):
            continue
        array = nemo._ZarrArray.open(sub, f"{origin}/{sub.name}", bf16)
        for name, layer, shape in nemo._unstack(sub.name, array.shape, layers, origin):
            arrays[name], shapes[name] = (array, layer), shape

    def region(name: str, bounds: Bounds) -> Tensor:
        array, layer = arrays[name]
        if layer is not None:
            return _zarr_region(array, [(layer, layer + 1), *bounds])[0]
        return _zarr_region(array, bounds)

    return StoredTensors(shapes, region)


def _zarr_region(array: nemo._ZarrArray, bounds: Bounds) -> Tensor:
    """Decode only the chunks that overlap `bounds`."""
    out = np.empty([b - a for a, b in bounds], dtype=array.dtype)
    grid = [range(a // c, (b - 1) // c + 1) for (a, b), c in zip(bounds, array.chunks)]
    for chunk_index in np.ndindex(*(len(r) for r in grid)):
        index = tuple(r[i] for r, i in zip(grid, chunk_index))
        lo = [i * c for i, c in zip(index, array.chunks)]
        src, dst = [], []
        for (a, b), l, c in zip(bounds, lo, array.chunks):
            s, e = max(a, l), min(b, l + c)
            src.append(slice(s - l, e - l))
            dst.append(slice(s - a, e - a))
        out[tuple(dst)] = array._chunk(index)[tuple(src)]
    out = np.ascontiguousarray(out).astype(array.dtype.newbyteorder("="), copy=False)
    if array.bf16:
        return torch.from_numpy(out.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(out)


def _dcp(directory: Path, origin: str, trust_pickle: bool, layers: int) -> StoredTensors:
    reader, metadata, entries, shapes = nemo.dcp_index(directory, origin, trust_pickle, layers)

    def region(name: str, bounds: Bounds) -> Tensor:
        key, layer = entries[name]
        if layer is not None:
            bounds = [(layer, layer + 1), *bounds]
        item = metadata.state_dict_metadata[key]
        target = torch.empty([b - a for a, b in bounds], dtype=item.properties.dtype)
        planner = nemo._RegionPlanner(key, tuple(a for a, _ in bounds), target)
        planner.set_up_planner({}, metadata, True)
        reader.read_data(reader.prepare_local_plan(planner.create_local_plan()), planner).wait()
        return target if layer is None else target[0]

    return StoredTensors(shapes, region)
