"""Read a NeMo checkpoint (`.nemo` tar, or the extracted directory) into config, HF state dict, tokenizer.

Weights come in three layouts; each is opened as a `_Weights` (Megatron names with global layer
numbers, shapes known up front, tensors loaded one at a time) and converted by megatron_to_hf:
- `model_weights.ckpt`, one per tensor/pipeline-parallel rank (torch pickles, merged here);
- `model_weights/` with `"sharded_backend": "zarr"` (one zarr v2 array per tensor);
- `model_weights/` with `"sharded_backend": "torch_dist"` (torch.distributed.checkpoint).
Distributed checkpoints stack the layers of a tensor on axis 0; they are unstacked per layer.
"""
from __future__ import annotations

import io
import json
import pickle
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.metadata import ChunkStorageMetadata, TensorStorageMetadata
from torch.distributed.checkpoint.planner import LoadPlan, LoadPlanner, ReadItem
from torch.distributed.checkpoint.planner_helpers import create_read_items_for_chunk_list

from nemotron.checkpoint import hf, megatron, megatron_hybrid
from nemotron.checkpoint.archive import ArchiveFileSystem, ArchiveLimits, ArchivePath, open_archive
from nemotron.errors import CheckpointError, ConfigError
from nemotron.model.config import ModelConfig
from nemotron.model.nemotron_h_config import NemotronHConfig


@dataclass(slots=True)
class NemoCheckpoint:
    config: ModelConfig | NemotronHConfig
    state_dict: dict[str, Tensor]  # Hugging Face names
    tokenizer_model: bytes | None  # contents of the SentencePiece file
    tokenizer_filename: str | None


@dataclass(slots=True)
class _Weights:
    """Megatron tensors by stored name, layers renumbered globally; `load` reads one tensor."""
    shapes: dict[str, tuple[int, ...]]
    load: Callable[[str], Tensor]

    def items(self) -> Iterator[tuple[str, Tensor]]:
        for name in self.shapes:
            yield name, self.load(name)


_PICKLE_HINT = ("pass trust_pickle=True (CLI: --trust-pickle) to load it, but only for files you trust, "
                "since unpickling can run arbitrary code")


def read_nemo(path: str | Path, *, trust_pickle: bool = False, dtype: torch.dtype | None = None,
              limits: ArchiveLimits | None = None) -> NemoCheckpoint:
    path = Path(path)
    if path.is_dir():
        return _read_root(path, str(path), trust_pickle, dtype)
    if not path.is_file():
        raise CheckpointError(f"no NeMo checkpoint at {path}")
    with open_archive(path, limits) as archive:  # members are read in place, never unpacked
        return _read_root(archive.root, str(path), trust_pickle, dtype)


def read_nemo_config(path: str | Path, *, trust_pickle: bool = False,
                     limits: ArchiveLimits | None = None) -> ModelConfig | NemotronHConfig:
    """The configuration alone: model_config.yaml and the tensor headers (the vocabulary size comes from
    the embedding's shape); no weights are read. PyTorch files are loaded under FakeTensorMode, which
    reads their pickled index and not their data."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    path = Path(path)
    if path.is_dir():
        with FakeTensorMode():
            return _read_config(path, str(path), trust_pickle)
    if not path.is_file():
        raise CheckpointError(f"no NeMo checkpoint at {path}")
    with open_archive(path, limits) as archive, FakeTensorMode():
        return _read_config(archive.root, str(path), trust_pickle)


def _read_config(root: Path, origin: str, trust_pickle: bool) -> ModelConfig | NemotronHConfig:
    raw = _read_yaml(root / "model_config.yaml", origin)
    return _config(raw, _open_weights(root, origin, raw, trust_pickle), origin)


def _read_root(root: Path, origin: str, trust_pickle: bool, dtype: torch.dtype | None) -> NemoCheckpoint:
    raw = _read_yaml(root / "model_config.yaml", origin)
    tokenizer_model, tokenizer_filename = _tokenizer(root, raw, origin)
    weights = _open_weights(root, origin, raw, trust_pickle)
    config = _config(raw, weights, origin)
    if isinstance(config, NemotronHConfig):
        state_dict = megatron_hybrid.megatron_to_hf(weights.items(), config, dtype)
    else:
        megatron.check_stored_shapes(weights.shapes, config)  # before any tensor is read
        state_dict = megatron.megatron_to_hf(weights.items(), config, dtype)
    return NemoCheckpoint(config, state_dict, tokenizer_model, tokenizer_filename)


def _extract(archive: Path, dest: Path) -> None:
    """Unpack an archive for readers that memory-map real files (parallel slice loading); the member
    index is checked first (no links, sparse members, traversal or oversized members)."""
    with open_archive(archive) as opened:
        opened.extract_to(dest)


def _read_yaml(path: Path, origin: str) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{origin} has no model_config.yaml")
    try:
        raw = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as err:
        raise ConfigError(f"{origin}/model_config.yaml is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}/model_config.yaml does not hold a mapping")
    return raw


def _config(raw: dict[str, Any], weights: _Weights, origin: str) -> ModelConfig | NemotronHConfig:
    shapes = {megatron.strip_prefix(name): shape for name, shape in weights.shapes.items()}
    embedding = next((n for n in shapes if n.endswith("embedding.word_embeddings.weight")), None)
    if embedding is None:
        raise CheckpointError(f"{origin} has no word embedding tensor (embedding.word_embeddings.weight)")
    for name in (embedding, "rm_head.weight"):
        if name in shapes and len(shapes[name]) != 2:
            raise CheckpointError(f"{origin}: tensor {name} has shape {tuple(shapes[name])}, not two dimensions")
    head = shapes.get("rm_head.weight")
    if head is not None:
        attributes = head[0]  # the head's rows are the reward attributes
        if raw.get("reward_model_type") == "regression":
            declared = _section(raw, "regression", origin).get("num_attributes", attributes)
            if declared != attributes:
                raise CheckpointError(f"{origin}: tensor rm_head.weight has {attributes} rows but "
                                      f"model_config.yaml declares regression.num_attributes {declared}")
    elif raw.get("reward_model_type"):  # a reward model without its head: megatron_to_hf reports it missing
        attributes = _section(raw, "regression", origin).get("num_attributes", 1)
    else:
        attributes = 0
    if megatron_hybrid.is_hybrid(raw):  # Nemotron-H (megatron-core MambaModel)
        config = megatron_hybrid.config_from_nemo(raw, shapes[embedding][0], origin)
        megatron_hybrid.check_layers(shapes, config, origin)
        return config
    # NeMo pads the vocabulary for tensor parallelism: the embedding's rows are the model's vocab size.
    config = ModelConfig.from_nemo_dict(raw, shapes[embedding][0], num_reward_attributes=attributes,
                                        reward_head_bias=head is None or "rm_head.bias" in shapes)
    stored = {megatron.layer_index(name) for name in shapes} - {None}
    if len(stored) != config.num_layers or (stored and max(stored) != config.num_layers - 1):
        raise CheckpointError(f"{origin}: model_config.yaml declares num_layers {config.num_layers}, "
                              f"the weights hold {len(stored)} layer(s)")
    return config


def _read_json(path: Path, origin: str) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise CheckpointError(f"{origin} is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{origin} holds a JSON {type(value).__name__}, not an object")
    return value


def _section(raw: dict[str, Any], key: str, origin: str) -> dict[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{origin}/model_config.yaml field {key} must be a mapping, got {value!r}")
    return value


def _tokenizer(root: Path, raw: dict[str, Any], origin: str) -> tuple[bytes | None, str | None]:
    """`tokenizer.model: nemo:<file>` names a file in the archive (NeMo prefixes a hash to its name);
    a plain path is looked up by its file name, since it usually points into the training cluster."""
    reference = _section(raw, "tokenizer", origin).get("model")
    if not reference:
        return None, None
    name = PurePosixPath(str(reference).removeprefix("nemo:")).name
    candidates = [root / name] + sorted(root.glob(f"*_{name}"))
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        if str(reference).startswith("nemo:"):
            raise CheckpointError(f"{origin}: model_config.yaml names tokenizer {reference!r}, "
                                  f"but there is no file {name} in the checkpoint")
        return None, None
    return found.read_bytes(), found.name


def _open_weights(root: Path, origin: str, raw: dict[str, Any], trust_pickle: bool) -> _Weights:
    sharded = root / "model_weights"
    if (sharded / "metadata.json").is_file():
        backend = _read_json(sharded / "metadata.json", f"{origin}/model_weights/metadata.json").get("sharded_backend")
        if backend == "zarr":
            return _zarr_weights(sharded, f"{origin}/model_weights", bf16="bf16" in str(raw.get("precision", "bf16")),
                                 layers=_declared_layers(raw, origin))
        if backend == "torch_dist":
            return _dcp_weights(sharded, f"{origin}/model_weights", trust_pickle, layers=_declared_layers(raw, origin))
        raise CheckpointError(f"{origin}/model_weights/metadata.json has sharded_backend {backend!r}; "
                              f"supported: zarr, torch_dist")
    return _ckpt_weights(root, origin, trust_pickle)


# ---- per-rank model_weights.ckpt ------------------------------------------------------------
_RANK_DIR = re.compile(r"^(?:mp_rank_(\d+)(?:_(\d+))?|tp_rank_(\d+)_pp_rank_(\d+))$")


def _rank_files(root: Path, origin: str) -> dict[tuple[int, int], Path]:
    """(tp, pp) -> file. NeMo writes mp_rank_XX (TP only) or tp_rank_XX_pp_rank_XXX; Megatron-LM mp_rank_XX_XXX."""
    if (root / "model_weights.ckpt").is_file():
        return {(0, 0): root / "model_weights.ckpt"}
    files = {}
    for directory in root.iterdir():
        match = _RANK_DIR.match(directory.name)
        if match and (directory / "model_weights.ckpt").is_file():
            tp, pp = (match.group(1), match.group(2)) if match.group(1) else (match.group(3), match.group(4))
            files[(int(tp), int(pp or 0))] = directory / "model_weights.ckpt"
    if not files:
        raise CheckpointError(f"{origin} has no weights: expected model_weights.ckpt, mp_rank_XX/, "
                              f"tp_rank_XX_pp_rank_XXX/ or model_weights/ with metadata.json")
    tp_size, pp_size = max(k[0] for k in files) + 1, max(k[1] for k in files) + 1
    for key in ((t, p) for t in range(tp_size) for p in range(pp_size)):
        if key not in files:
            raise CheckpointError(f"{origin} lacks the weights of tensor-parallel rank {key[0]}, "
                                  f"pipeline stage {key[1]} (found {len(files)} of {tp_size * pp_size} ranks)")
    return files


def _torch_load(path: Path, origin: str, trust_pickle: bool) -> dict[str, Any]:
    try:
        try:
            with torch.serialization.safe_globals([io.BytesIO]):
                state = _load_torch_file(path, weights_only=True)
        except pickle.UnpicklingError:
            if not trust_pickle:
                raise CheckpointError(f"{origin} holds arbitrary Python objects besides tensors (or is not a "
                                      f"PyTorch file); {_PICKLE_HINT}") from None
            state = _load_torch_file(path, weights_only=False)
    except CheckpointError:
        raise
    except Exception as err:  # truncated, not a torch file, or (trusted) a pickle naming missing classes
        raise CheckpointError(f"{origin} is not a readable PyTorch file: {hf.first_sentence(err)}") from None
    hf.check_state_dict(state, origin)
    return state


def _load_torch_file(path: Path, weights_only: bool) -> Any:
    """A file on disk is memory-mapped (zip format only); an archive member is read from the archive.
    TE's _extra_state may be an io.BytesIO, harmless to rebuild."""
    if isinstance(path, ArchivePath):
        with path.open("rb") as handle:
            return torch.load(handle, map_location="cpu", weights_only=weights_only)
    return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=zipfile.is_zipfile(path))


def _ckpt_weights(root: Path, origin: str, trust_pickle: bool) -> _Weights:
    files = _rank_files(root, origin)
    tp_size, pp_size = max(k[0] for k in files) + 1, max(k[1] for k in files) + 1
    shards = {key: _torch_load(path, f"{origin}/{path.relative_to(root)}", trust_pickle)
              for key, path in files.items()}
    parts: dict[str, list[Tensor]] = {}  # global name -> one tensor per TP rank
    for stage, name, global_name in megatron.stage_names((shards[(0, stage)] for stage in range(pp_size)), origin):
        parts[global_name] = [_rank_tensor(shards, (tp, stage), name, origin) for tp in range(tp_size)]

    def merged_shape(name: str) -> tuple[int, ...]:
        shape, dim = list(parts[name][0].shape), megatron.tp_split_dim(name)
        if dim is not None:
            shape[dim] = sum(t.shape[dim] for t in parts[name])
        return tuple(shape)

    def load(name: str) -> Tensor:
        dim = megatron.tp_split_dim(name)
        return parts[name][0] if dim is None or tp_size == 1 else torch.cat(parts[name], dim)

    return _Weights({name: merged_shape(name) for name in parts}, load)


def _rank_tensor(shards: dict[tuple[int, int], dict[str, Any]], key: tuple[int, int], name: str,
                 origin: str) -> Tensor:
    value = shards[key].get(name)
    if not isinstance(value, Tensor):
        what = "lacks" if value is None else f"holds a {type(value).__name__} for"
        raise CheckpointError(f"{origin}: tensor-parallel rank {key[0]}, stage {key[1]} {what} tensor {name!r}")
    dim = megatron.tp_split_dim(name)
    if dim is not None and value.dim() <= dim:
        raise CheckpointError(f"{origin}: tensor {name!r} has shape {tuple(value.shape)}, too few dimensions "
                              f"for a weight split along dimension {dim}")
    return value


# ---- distributed checkpoints: layers stacked on axis 0 ----------------------------------------
def _declared_layers(raw: dict[str, Any], origin: str) -> int:
    layers = raw.get("num_layers")
    if not isinstance(layers, int) or isinstance(layers, bool) or layers <= 0:
        raise ConfigError(f"{origin}/model_config.yaml field num_layers must be a positive integer, got {layers!r}")
    return layers


def _unstack(key: str, shape: tuple[int, ...], layers: int | None = None,
             origin: str = "") -> list[tuple[str, int | None, tuple[int, ...]]]:
    """Stored key -> (name, layer or None, shape) per model tensor; `decoder.layers.X` holds all `layers`
    (checked when given, so a header claiming a billion layers fails before they are listed)."""
    bare = megatron.strip_prefix(key)
    rest = bare.removeprefix(megatron.MCORE_LAYER_PREFIX)
    if rest == bare or rest.split(".", 1)[0].isdigit():
        return [(key, None, shape)]
    if not shape or (layers is not None and shape[0] != layers):
        raise CheckpointError(f"{origin}: {key} stacks {shape[0] if shape else 0} layers (shape {shape}), "
                              f"model_config.yaml declares num_layers {layers}")
    stem = key.removesuffix(rest)
    return [(f"{stem}{i}.{rest}", i, shape[1:]) for i in range(shape[0])]


def _zarr_weights(directory: Path, origin: str, bf16: bool, layers: int) -> _Weights:
    arrays: dict[str, tuple[_ZarrArray, int | None]] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for sub in sorted(p for p in directory.iterdir() if p.is_dir()):  # common.pt is never unpickled
        if megatron.is_skipped(sub.name):
            continue
        array = _ZarrArray.open(sub, f"{origin}/{sub.name}", bf16)
        for name, layer, shape in _unstack(sub.name, array.shape, layers, origin):
            arrays[name], shapes[name] = (array, layer), shape

    def load(name: str) -> Tensor:
        array, layer = arrays[name]
        return array.read(layer)

    return _Weights(shapes, load)


@dataclass(slots=True)
class _ZarrArray:
    """A zarr v2 array as Megatron-core writes it, read with numpy alone."""
    path: Path
    origin: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: np.dtype
    bf16: bool  # 2-byte raw words holding bfloat16
    order: str
    separator: str
    fill_value: Any
    codecs: list[Any]  # numcodecs codecs, applied in reverse when reading

    @classmethod
    def open(cls, path: Path, origin: str, model_bf16: bool) -> _ZarrArray:
        if not (path / ".zarray").is_file():
            raise CheckpointError(f"{origin} is neither a zarr array (no .zarray) nor Transformer Engine _extra_state")
        meta = _read_json(path / ".zarray", f"{origin}/.zarray")
        if meta.get("zarr_format") != 2:
            raise CheckpointError(f"{origin}/.zarray has zarr_format {meta.get('zarr_format')!r}; only 2 is supported")
        shape, chunks = meta.get("shape"), meta.get("chunks")
        if not (_ints(shape, 0) and _ints(chunks, 1) and len(shape) == len(chunks)):
            raise CheckpointError(f"{origin}/.zarray has shape {shape!r} and chunks {chunks!r}; both must be lists "
                                  f"of as many integers (chunks positive)")
        order, separator = meta.get("order", "C"), meta.get("dimension_separator", ".")
        if order not in ("C", "F") or separator not in (".", "/"):
            raise CheckpointError(f"{origin}/.zarray has order {order!r} / dimension_separator {separator!r}")
        dtype, bf16 = _zarr_dtype(meta.get("dtype"), model_bf16, origin)
        filters = meta.get("filters") or []
        if not isinstance(filters, list):
            raise CheckpointError(f"{origin}/.zarray has filters {filters!r}, not a list")
        codec_specs = [*filters, *([meta["compressor"]] if meta.get("compressor") else [])]
        return cls(path, origin, tuple(shape), tuple(chunks), dtype, bf16, order, separator,
                   meta.get("fill_value"), _codecs(codec_specs, origin))

    def read(self, layer: int | None) -> Tensor:
        """The whole array, or index `layer` of axis 0."""
        if not self.shape:
            raise CheckpointError(f"{self.origin} is a scalar, not a weight")
        start, stop = (0, self.shape[0]) if layer is None else (layer, layer + 1)
        out = np.empty((stop - start, *self.shape[1:]), dtype=self.dtype)
        grid = [range(start // self.chunks[0], (stop - 1) // self.chunks[0] + 1)]
        grid += [range(-(-size // chunk)) for size, chunk in zip(self.shape[1:], self.chunks[1:])]
        for index in np.ndindex(*(len(r) for r in grid)):
            chunk_index = tuple(r[i] for r, i in zip(grid, index))
            lo = [i * c for i, c in zip(chunk_index, self.chunks)]
            hi = [min(l + c, s) for l, c, s in zip(lo, self.chunks, self.shape)]
            lo0, hi0 = max(lo[0], start), min(hi[0], stop)
            chunk = self._chunk(chunk_index)  # full chunk shape, edge chunks padded
            src = (slice(lo0 - lo[0], hi0 - lo[0]), *(slice(0, h - l) for l, h in zip(lo[1:], hi[1:])))
            dst = (slice(lo0 - start, hi0 - start), *(slice(l, h) for l, h in zip(lo[1:], hi[1:])))
            out[dst] = chunk[src]
        if layer is not None:
            out = out[0]
        out = np.ascontiguousarray(out).astype(self.dtype.newbyteorder("="), copy=False)
        if self.bf16:
            return torch.from_numpy(out.view(np.int16)).view(torch.bfloat16)
        return torch.from_numpy(out)

    def _chunk(self, index: tuple[int, ...]) -> np.ndarray:
        file = self.path / self.separator.join(map(str, index))
        if not file.is_file():
            if self.fill_value is None:
                raise CheckpointError(f"{self.origin} lacks chunk {file.name} and has no fill value")
            return np.full(self.chunks, self.fill_value, dtype=self.dtype)
        data: Any = file.read_bytes()
        try:
            for codec in reversed(self.codecs):
                data = codec.decode(data)
            flat = np.frombuffer(data, dtype=self.dtype)
        except (ValueError, TypeError, RuntimeError) as err:  # numcodecs and numpy on corrupt bytes
            raise CheckpointError(f"{self.origin}/{file.name} is corrupt: {err}") from None
        if flat.size != int(np.prod(self.chunks)):
            raise CheckpointError(f"{self.origin}/{file.name} holds {flat.size} values, expected chunk "
                                  f"shape {self.chunks}")
        return flat.reshape(self.chunks, order=self.order)


def _ints(value: Any, minimum: int) -> bool:
    return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum
                                           for v in value)


def _zarr_dtype(text: Any, model_bf16: bool, origin: str) -> tuple[np.dtype, bool]:
    # Megatron-core writes bf16 arrays through ml_dtypes' bfloat16 and patches .zarray's "<V2" to
    # "bfloat16"; other tools leave "<V2" or use 16-bit integers. All are raw bf16 words.
    if text == "bfloat16":
        return np.dtype("<u2"), True
    if not isinstance(text, str):
        raise CheckpointError(f"{origin}/.zarray has dtype {text!r}, not a dtype string")
    try:
        dtype = np.dtype(text)
    except (TypeError, ValueError, SyntaxError):
        raise CheckpointError(f"{origin}/.zarray has dtype {text!r}, which numpy cannot read") from None
    if dtype.kind in "Viu" and dtype.itemsize == 2:
        if not model_bf16:
            raise CheckpointError(f"{origin} stores raw 16-bit words ({text}) but model_config.yaml's precision "
                                  f"is not bf16, so their format is unknown")
        return (np.dtype("<u2") if dtype.kind == "V" else dtype), True
    if dtype.kind != "f":
        raise CheckpointError(f"{origin}/.zarray has dtype {text!r}; weights are floating point")
    return dtype, False


def _codecs(specs: list[dict[str, Any]], origin: str) -> list[Any]:
    if not specs:
        return []
    try:
        import numcodecs  # optional: Megatron writes uncompressed arrays
    except ImportError:
        raise CheckpointError(f"{origin} is compressed ({specs[-1].get('id')}); install numcodecs to read it") from None
    try:
        return [numcodecs.get_codec(spec) for spec in specs]
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{origin} names a codec numcodecs cannot build ({specs}): {err}") from None


def dcp_index(directory: Path, origin: str, trust_pickle: bool, layers: int):
    """A torch_dist checkpoint's reader, metadata and tensor index: name -> (stored key, layer or
    None) and name -> shape. Shared by whole-model loading and the parallel slice loader."""
    # `.metadata` is a plain pickle (FileSystemReader.read_metadata calls pickle.load on it): code can
    # run while reading it. The tensor data itself is read with torch.load(weights_only=True).
    if not trust_pickle:
        raise CheckpointError(f"{origin}/.metadata (torch_dist format) is a Python pickle; {_PICKLE_HINT}")
    if not (directory / ".metadata").is_file():
        raise CheckpointError(f"{origin} is a torch_dist checkpoint without its .metadata file")
    with (directory / ".metadata").open("rb") as file:
        metadata = _MetadataUnpickler(file).load()
    reader = FileSystemReader(str(directory))
    if isinstance(directory, ArchivePath):  # read the .distcp members in place
        reader.fs, reader.path = ArchiveFileSystem(), directory
    reader.set_up_storage_reader(metadata, True)
    entries: dict[str, tuple[str, int | None]] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for key, item in metadata.state_dict_metadata.items():
        if not isinstance(item, TensorStorageMetadata) or megatron.is_skipped(key):
            continue  # byte entries are pickled objects (_extra_state): never loaded
        for name, layer, shape in _unstack(key, tuple(item.size), layers, origin):
            entries[name], shapes[name] = (key, layer), shape
    return reader, metadata, entries, shapes


def _dcp_weights(directory: Path, origin: str, trust_pickle: bool, layers: int) -> _Weights:
    reader, metadata, entries, shapes = dcp_index(directory, origin, trust_pickle, layers)

    def load(name: str) -> Tensor:
        key, layer = entries[name]
        item = metadata.state_dict_metadata[key]
        target = torch.empty(shapes[name] if layer is None else (1, *shapes[name]), dtype=item.properties.dtype)
        offsets = (0 if layer is None else layer,) + (0,) * (len(item.size) - 1)
        planner = _RegionPlanner(key, offsets, target)
        planner.set_up_planner({}, metadata, True)
        reader.read_data(reader.prepare_local_plan(planner.create_local_plan()), planner).wait()
        return target if layer is None else target[0]

    return _Weights(shapes, load)


class _MetadataUnpickler(pickle.Unpickler):
    """Megatron stores its save plans in `.metadata` too (`all_local_plans`), so the pickle may name
    Megatron classes; without Megatron installed they become empty stand-ins, which the tensor
    index never uses."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            if module.split(".")[0] not in ("megatron", "nemo"):
                raise
            return type(name, (), {"__module__": module})


class _RegionPlanner(LoadPlanner):
    """Reads the block of one stored tensor that starts at `offsets` into `target`, so a single layer
    of a stacked tensor is read without materialising the whole stack."""

    def __init__(self, key: str, offsets: tuple[int, ...], target: Tensor) -> None:
        self.key, self.offsets, self.target = key, offsets, target

    def set_up_planner(self, state_dict: Any, metadata: Any = None, is_coordinator: bool = False) -> None:
        self.metadata = metadata

    def create_local_plan(self) -> LoadPlan:
        block = ChunkStorageMetadata(offsets=torch.Size(self.offsets), sizes=self.target.shape)
        stored = self.metadata.state_dict_metadata[self.key]
        return LoadPlan(create_read_items_for_chunk_list(self.key, stored, [block]))

    def create_global_plan(self, global_plan: list[LoadPlan]) -> list[LoadPlan]:
        return global_plan

    def finish_plan(self, central_plan: LoadPlan) -> LoadPlan:
        return central_plan

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        raise CheckpointError(f"{self.key} is stored as bytes, not as a tensor")

    def resolve_tensor(self, read_item: ReadItem) -> Tensor:
        region = self.target  # dest offsets are relative to the requested block
        for dim, (start, length) in enumerate(zip(read_item.dest_offsets, read_item.lengths)):
            region = region.narrow(dim, start, length)
        return region

    def commit_tensor(self, read_item: ReadItem, tensor: Tensor) -> None:
        pass  # resolve_tensor handed out a view of target: the data is already in place
