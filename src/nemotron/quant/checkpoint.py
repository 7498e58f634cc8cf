"""`nemotron quantize SRC DST`: a checkpoint in, a quantized Hugging Face-style directory out.

Tensors of a Hugging Face source stream through one at a time (memory: one output shard), so a
model larger than RAM can be quantized; a .nemo source is converted in memory first. The output
keeps Hugging Face names; a quantized linear layer `X` is stored as `X.weight` (int8 /
float8_e4m3fn) or `X.weight_packed` (int4, uint8) plus `X.weight_scale`; the LM head, unless kept,
as int8 `lm_head.weight` plus `lm_head.weight_scale` whatever the scheme.
config.json gets `quantization_config` {"quant_method": "nemotron", "scheme": ..., "lm_head": ...}
(plus descriptive fields for people), which `load_model` reads to build the quantized modules before
assigning tensors. Checkpoints written before the head was quantized have no "lm_head": false.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor

from nemotron.checkpoint import hf
from nemotron.checkpoint.load import SourceKind, resolve
from nemotron.errors import CheckpointError
from nemotron.model.config import ModelConfig
from nemotron.model.nemotron import build_model
from nemotron.quant.linear import GROUP_SIZE, QuantizedLinear
from nemotron.quant.transform import HEAD_CLASS, HEAD_WEIGHT, is_quantized_name, quantized_linears, scheme_class
from nemotron.tokenizer import Tokenizer

DESCRIPTIONS = {
    "int8": {"weights": "int8, symmetric, one float32 scale per output channel", "activations": "16-bit"},
    "int4": {"weights": f"int4, symmetric, one float16 scale per {GROUP_SIZE} input channels, two per byte "
                        f"(low nibble: element j, high nibble: element j + {GROUP_SIZE // 2} of each group)",
             "group_size": GROUP_SIZE, "activations": "16-bit"},
    "fp8": {"weights": "float8_e4m3fn, one float32 scale per output channel",
            "activations": "float8_e4m3fn, scaled per token at run time (dynamic)"},
}
QUANTIZED_MODULES = {
    True: "decoder-layer linear layers (q/k/v/o, up, down) in the scheme; the LM head in int8, one float32 scale "
          "per vocabulary row; embeddings and norms unquantized",
    False: "decoder-layer linear layers (q/k/v/o, up, down); embeddings, norms and heads unquantized",
}


def quantize_checkpoint(src: str | Path, dst: str | Path, scheme: str, *, head: bool = True,
                        trust_pickle: bool = False, max_shard_bytes: int = hf.DEFAULT_SHARD_BYTES,
                        progress: Callable[[int, int], None] | None = None) -> Path:
    """Write `src` (HF directory or .nemo) quantized with `scheme` to the directory `dst`; with
    `head` a language model's LM head in int8 as well (a reward model's head stays as it is).
    `progress(layer, num_layers)` is called as each decoder layer starts."""
    cls = scheme_class(scheme)
    source = resolve(src)
    if source.kind is SourceKind.PRESET:
        raise CheckpointError(f"{src!r} is a preset with random weights; there is nothing to quantize")
    if source.kind is SourceKind.HF_DIR:
        config = ModelConfig.from_json_file(source.path / "config.json")
        tensors: Iterable[tuple[str, Tensor]] = hf.iter_tensors(source.path, trust_pickle)
        tokenizer = (Tokenizer.from_dir(source.path) if any((source.path / f).is_file() for f in
                     ("tokenizer.model", "tokenizer.json")) else None)
    elif source.kind is SourceKind.GGUF:
        from nemotron.checkpoint.gguf import read_gguf

        checkpoint = read_gguf(source.path)
        config, tensors, tokenizer = checkpoint.config, checkpoint.tensors, checkpoint.tokenizer
    else:
        from nemotron.checkpoint.nemo import read_nemo

        checkpoint = read_nemo(source.path, trust_pickle=trust_pickle)
        config, tensors = checkpoint.config, checkpoint.state_dict.items()
        tokenizer = (Tokenizer.from_sentencepiece_bytes(checkpoint.tokenizer_model)
                     if checkpoint.tokenizer_model else None)
    if config.quantization is not None:
        raise CheckpointError(f"{src} is already quantized ({config.quantization})")
    dst = Path(dst)
    hf.refuse_a_checkpoint_at(dst)
    head = head and not config.is_reward_model
    with torch.device("meta"):
        model = build_model(config)
    for _, _, linear, layer_class in quantized_linears(model, scheme, head):
        layer_class.tensor_specs(linear.in_features, linear.out_features)  # shapes a scheme cannot hold fail now
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}

    with hf.writing(dst):  # a full disk or a file in the way: one line, the partial shards removed
        writer = _ShardWriter(dst, max_shard_bytes)
        try:
            _write(tensors, expected, cls, head, writer, src, config.num_layers, progress)
            writer.close()
        except BaseException:
            writer.abort()
            raise
        config_dict = config.replace(quantization=scheme, quantized_lm_head=head).to_hf_dict()
        config_dict["quantization_config"].update(DESCRIPTIONS[scheme], modules=QUANTIZED_MODULES[head])
        (dst / "config.json").write_text(json.dumps(config_dict, indent=2) + "\n")
        if tokenizer is not None:
            tokenizer.save(dst)
    return dst


def _write(tensors: Iterable[tuple[str, Tensor]], expected: dict[str, tuple[int, ...]], cls: type[QuantizedLinear],
           head: bool, writer: _ShardWriter, src: str | Path, num_layers: int,
           progress: Callable[[int, int], None] | None) -> None:
    """Check each tensor against the configuration, quantize the decoder linears' weights (and with
    `head` the LM head's), write."""
    layer = -1
    for raw_name, tensor in tensors:
        name = hf.normalise_name(raw_name)
        if expected.pop(name, None) != tuple(tensor.shape):
            raise CheckpointError(f"{src}: tensor {raw_name!r} (shape {tuple(tensor.shape)}) does not fit the "
                                  f"configuration")
        if not is_quantized_name(name, head):
            writer.add(name, tensor)
            continue
        layer_class = HEAD_CLASS if name == HEAD_WEIGHT else cls
        index = layer if name == HEAD_WEIGHT else int(name.split(".")[2])
        if progress is not None and index != layer:
            layer = index
            progress(index, num_layers)
        for suffix, quantized in layer_class.quantize_weight(tensor).items():
            writer.add(name.removesuffix("weight") + suffix, quantized)
    if expected:
        raise CheckpointError(f"{src}: missing tensor(s) {', '.join(sorted(expected)[:3])}")


class _ShardWriter:
    """Safetensors shards of at most `max_bytes`, written as they fill; an index when there are several."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory, self.max_bytes = directory, max_bytes
        self.pending: dict[str, Tensor] = {}
        self.pending_bytes = self.total_bytes = 0
        self.files: list[tuple[Path, list[str]]] = []

    def add(self, name: str, tensor: Tensor) -> None:
        nbytes = tensor.numel() * tensor.element_size()
        if self.pending and self.pending_bytes + nbytes > self.max_bytes:
            self._flush()
        self.pending[name] = tensor.detach().to("cpu").contiguous()
        self.pending_bytes += nbytes
        self.total_bytes += nbytes

    def _flush(self) -> None:
        path = self.directory / f"shard-{len(self.files):05d}.safetensors.partial"
        save_file(self.pending, str(path), metadata={"format": "pt"})
        self.files.append((path, list(self.pending)))
        self.pending, self.pending_bytes = {}, 0

    def abort(self) -> None:
        for path, _ in self.files:
            path.unlink(missing_ok=True)

    def close(self) -> None:
        if self.pending or not self.files:
            self._flush()
        count = len(self.files)
        weight_map: dict[str, str] = {}
        for i, (path, names) in enumerate(self.files):
            final = hf.SINGLE_FILE if count == 1 else f"model-{i + 1:05d}-of-{count:05d}.safetensors"
            path.rename(self.directory / final)
            weight_map.update(dict.fromkeys(names, final))
        if count > 1:
            index = {"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map}
            (self.directory / hf.INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
