"""Hugging Face checkpoint directories: config.json plus safetensors (single file or sharded).

Weights are read tensor by tensor from memory-mapped files straight into a model built on the meta
device, so a checkpoint is never held twice in memory.
"""
from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from nemotron.errors import CheckpointError
from nemotron.model.config import ModelConfig

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
PICKLE_FILE = "pytorch_model.bin"
DEFAULT_SHARD_BYTES = 5 * 1024**3

# Buffers some older exports saved; they are recomputed, never loaded.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def is_hf_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def weight_files(directory: Path) -> list[Path]:
    """The safetensors files of a checkpoint directory, in index order."""
    index = directory / INDEX_FILE
    if index.is_file():
        files = [directory / name for name in _shard_names(index)]
        for file in files:
            if not file.is_file():
                raise CheckpointError(f"{index} names shard {file.name}, which is missing from {directory}")
        return files
    if (directory / SINGLE_FILE).is_file():
        return [directory / SINGLE_FILE]
    if (directory / PICKLE_FILE).is_file():
        return [directory / PICKLE_FILE]
    raise CheckpointError(f"{directory} has no {SINGLE_FILE}, {INDEX_FILE} or {PICKLE_FILE}")


def safetensors_only(directory: Path) -> bool:
    """True when the weights are safetensors files, whose headers give names and shapes without loading."""
    return all(file.suffix == ".safetensors" for file in weight_files(directory))


def _shard_names(index: Path) -> list[str]:
    """The shard file names an index maps tensors to: plain names of files beside it, nothing else."""
    try:
        weight_map = json.loads(index.read_bytes())["weight_map"]
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, KeyError, TypeError) as err:
        raise CheckpointError(f"{index} is not a valid safetensors index ({type(err).__name__}: {err})") from None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index}: weight_map must be a non-empty object of tensor name -> shard file")
    names = list(dict.fromkeys(weight_map.values()))
    for name in names:
        if not isinstance(name, str) or PurePosixPath(name).name != name or name in ("", ".", ".."):
            raise CheckpointError(f"{index} maps a tensor to {name!r}, which is not a file name in its directory")
    return names


@contextmanager
def writing(dst: str | Path):
    """An OSError while writing a checkpoint (a file in the way, no permission, a full disk) as one line."""
    try:
        yield
    except OSError as err:
        raise CheckpointError(f"cannot write {err.filename or dst}: {err.strerror or err}") from None


def refuse_a_checkpoint_at(dst: str | Path) -> None:
    """A checkpoint is written into an empty (or new) directory: beside another one's files, its old
    shards and index would outlive the new weights and load instead of them."""
    dst = Path(dst)
    if dst.is_dir() and any(next(dst.glob(pattern), None) for pattern in (
            "config.json", "*.safetensors", "*.safetensors.index.json", "*.bin")):
        raise CheckpointError(f"{dst} already holds a checkpoint; choose an empty directory")


@contextmanager
def open_safetensors(file: Path):
    """safe_open, with a malformed file (empty, truncated, absurd header) reported as a CheckpointError.
    Errors raised while reading tensors inside the block are reported the same way."""
    try:
        with safe_open(str(file), framework="pt") as handle:
            yield handle
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        message = str(err).removeprefix("Error while deserializing header: ")
        raise CheckpointError(f"{file} is not a readable safetensors file: {message}") from None


def iter_tensors(directory: Path, trust_pickle: bool = False) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (name, tensor) one at a time; safetensors files are memory-mapped."""
    for file in weight_files(directory):
        if file.suffix == ".bin":
            yield from _load_pickle(file, trust_pickle).items()
            continue
        with open_safetensors(file) as handle:
            for name in handle.keys():
                if not name.endswith(_IGNORED_SUFFIXES):
                    yield name, handle.get_tensor(name)


def tensor_shapes(directory: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """Name -> (shape, dtype) from the safetensors headers, without reading any weights."""
    shapes: dict[str, tuple[tuple[int, ...], str]] = {}
    for file in weight_files(directory):
        if file.suffix == ".bin":
            raise CheckpointError(f"{file} is a pickle; shapes can only be read from safetensors files")
        with open_safetensors(file) as handle:
            for name in handle.keys():
                tensor_slice = handle.get_slice(name)
                shapes[name] = (tuple(tensor_slice.get_shape()), tensor_slice.get_dtype())
    return shapes


def _load_pickle(file: Path, trust_pickle: bool) -> dict[str, torch.Tensor]:
    if not zipfile.is_zipfile(file):
        raise CheckpointError(f"{file} is not a PyTorch checkpoint in torch.save's zip format (corrupt, or "
                              f"saved by a PyTorch older than 1.6)")
    try:
        state = torch.load(file, map_location="cpu", weights_only=not trust_pickle, mmap=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError or others for rejected pickles
        if trust_pickle:
            raise CheckpointError(f"cannot read {file}: {first_sentence(err)}") from None
        raise CheckpointError(
            f"{file} holds Python objects besides tensors and was not unpickled; if you trust "
            f"this file, pass --trust-pickle (trust_pickle=True) to load it") from None
    check_state_dict(state, str(file))
    return state


def check_state_dict(state: object, origin: str) -> None:
    """A pickled state dict is a dict keyed by tensor names; anything else is refused by name."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{origin} holds a {type(state).__name__}, not a state dict")
    for key in state:
        if not isinstance(key, str):
            raise CheckpointError(f"{origin} holds an entry keyed {key!r}, not by a tensor name")


def first_sentence(err: BaseException) -> str:
    """Library errors can run to paragraphs; the first sentence of the first line says what happened."""
    line = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return line.split(". ")[0]


def normalise_name(name: str) -> str:
    """Accept state dicts saved from the bare trunk (no `model.` prefix)."""
    if name.startswith(("model.", "lm_head.", "rm_head.")):
        return name
    return f"model.{name}"


def load_state_dict_into(model: torch.nn.Module, tensors: Iterator[tuple[str, torch.Tensor]] | Mapping[str, torch.Tensor],
                         dtype: torch.dtype, device: torch.device | str, source: str) -> None:
    """Check names and shapes against `model` (may live on the meta device), then assign."""
    expected = {name: tuple(p.shape) for name, p in model.state_dict().items()}
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    loaded: dict[str, torch.Tensor] = {}
    for raw_name, tensor in items:
        name = normalise_name(raw_name)
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"{source}: entry {raw_name!r} is a {type(tensor).__name__}, not a tensor")
        if name not in expected:
            raise CheckpointError(f"{source}: unexpected tensor {raw_name!r} (shape {tuple(tensor.shape)}) "
                                  f"that this model configuration has no place for")
        if tuple(tensor.shape) != expected[name]:
            raise CheckpointError(f"{source}: tensor {raw_name!r} has shape {tuple(tensor.shape)}, "
                                  f"the configuration expects {expected[name]}")
        loaded[name] = tensor.to(device=device, dtype=dtype)
    missing = sorted(set(expected) - set(loaded))
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise CheckpointError(f"{source}: missing tensor(s) {', '.join(missing[:3])}{more}")
    model.load_state_dict(loaded, strict=True, assign=True)


def save_hf_dir(state_dict: Mapping[str, torch.Tensor], config: ModelConfig, directory: str | Path,
                dtype: torch.dtype | None = None, max_shard_bytes: int = DEFAULT_SHARD_BYTES) -> Path:
    """Write config.json and safetensors shards (with an index when there is more than one)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if dtype is not None:
        config = config.replace(torch_dtype=str(dtype).removeprefix("torch."))
    config.save_json(directory / "config.json")
    shards = _plan_shards(state_dict, dtype, max_shard_bytes)
    total_bytes = sum(_nbytes(t, dtype) for t in state_dict.values())
    weight_map: dict[str, str] = {}
    for i, names in enumerate(shards):
        filename = SINGLE_FILE if len(shards) == 1 else f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        shard = {name: _prepare(state_dict[name], dtype) for name in names}
        save_file(shard, str(directory / filename), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(names, filename))
        del shard
    if len(shards) > 1:
        index = {"metadata": {"total_size": total_bytes}, "weight_map": weight_map}
        (directory / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    return directory


def _prepare(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    tensor = tensor.detach().to("cpu")
    if dtype is not None and tensor.is_floating_point():
        tensor = tensor.to(dtype)
    return tensor.contiguous()


def _nbytes(tensor: torch.Tensor, dtype: torch.dtype | None) -> int:
    itemsize = dtype.itemsize if dtype is not None and tensor.is_floating_point() else tensor.element_size()
    return tensor.numel() * itemsize


def _plan_shards(state_dict: Mapping[str, torch.Tensor], dtype: torch.dtype | None,
                 max_shard_bytes: int) -> list[list[str]]:
    shards: list[list[str]] = [[]]
    size = 0
    for name, tensor in state_dict.items():
        nbytes = _nbytes(tensor, dtype)
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    return shards


class SliceReader:
    """Reads parts of the tensors of a checkpoint directory, by model name (`normalise_name`): for
    safetensors only the requested bytes are read (`get_slice`), for a pickle the file is memory-mapped
    and sliced. Tensor/pipeline-parallel loading reads each rank's shard with it, never a whole
    sharded tensor."""

    def __init__(self, directory: Path, trust_pickle: bool = False) -> None:
        self.directory, self.trust_pickle = directory, trust_pickle
        self._files: dict[str, tuple[Path, str]] = {}  # model name -> (file, name stored there)
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._handles: dict[Path, object] = {}
        for file in weight_files(directory):
            for stored, shape in self._scan(file):
                name = normalise_name(stored)
                self._files[name], self._shapes[name] = (file, stored), shape

    def _scan(self, file: Path) -> Iterator[tuple[str, tuple[int, ...]]]:
        handle = self._open(file)
        if isinstance(handle, dict):
            for name, tensor in handle.items():
                yield name, tuple(tensor.shape)
            return
        for name in handle.keys():
            if not name.endswith(_IGNORED_SUFFIXES):
                yield name, tuple(handle.get_slice(name).get_shape())

    def _open(self, file: Path):
        if file not in self._handles:
            if file.suffix == ".bin":
                self._handles[file] = _load_pickle(file, self.trust_pickle)
            else:
                try:
                    self._handles[file] = safe_open(str(file), framework="pt")
                except (SafetensorError, OSError, ValueError, RuntimeError) as err:
                    message = str(err).removeprefix("Error while deserializing header: ")
                    raise CheckpointError(f"{file} is not a readable safetensors file: {message}") from None
        return self._handles[file]

    def shape(self, name: str) -> tuple[int, ...]:
        if name not in self._shapes:
            raise CheckpointError(f"{self.directory}: no tensor {name!r}")
        return self._shapes[name]

    def read(self, name: str, rows: tuple[tuple[int, int], ...] | None = None,
             cols: tuple[int, int] | None = None) -> torch.Tensor:
        """Rows ranges of dim 0 (concatenated), columns [c0, c1) of dim 1; None reads all of a dim."""
        self.shape(name)  # a clear error for a missing tensor
        file, name = self._files[name]
        handle = self._open(file)
        whole = (slice(None),) if cols is None else (slice(None), slice(*cols))
        ranges = [slice(None)] if rows is None else [slice(a, b) for a, b in rows]
        if isinstance(handle, dict):
            parts = [handle[name][(r, *whole[1:])] for r in ranges]
        else:
            part = handle.get_slice(name)
            parts = [part[(r, *whole[1:])] for r in ranges]
        if len(parts) > 1:
            return torch.cat(parts)
        return parts[0].clone() if isinstance(handle, dict) else parts[0]  # no view into a mapped pickle
