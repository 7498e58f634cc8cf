"""One entry point for every way a user names a model: a Hugging Face directory, a `.nemo` archive
(file or extracted directory), or a preset name (random weights, for trying the tooling)."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import torch

from nemotron.checkpoint import archive, gguf, hf, preflight
from nemotron.errors import CheckpointError, ConfigError, NemotronError
from nemotron.model.config import ModelConfig
from nemotron.model.nemotron import NemotronLike, build_model, init_random_weights
from nemotron.model.nemotron_h_config import NemotronHConfig, read_config_json
from nemotron.model.presets import get_preset, preset_names
from nemotron.tokenizer import Tokenizer

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16, "half": torch.float16}  # vLLM's too


class SourceKind(Enum):
    HF_DIR = "Hugging Face directory"
    NEMO = "NeMo checkpoint"
    GGUF = "GGUF file"
    PRESET = "preset (random weights)"


@dataclass(slots=True, frozen=True)
class ModelSource:
    kind: SourceKind
    spec: str
    path: Path | None


@dataclass(slots=True)
class LoadedModel:
    model: NemotronLike
    config: ModelConfig
    tokenizer: Tokenizer | None
    source: ModelSource
    tokenizer_error: str | None = None  # why the checkpoint's own tokenizer could not be read (a GGUF's vocabulary)

    @property
    def random_weights(self) -> bool:
        return self.source.kind is SourceKind.PRESET

    def require_tokenizer(self, option: str) -> Tokenizer:
        """The tokenizer, or a one-line error naming `option` (--tokenizer FILE, tokenizer=FILE)."""
        if self.tokenizer is None:
            raise NemotronError(self.tokenizer_error or f"{self.source.spec} comes without a tokenizer; pass {option}")
        return self.tokenizer


def resolve(spec: str | Path) -> ModelSource:
    path = Path(spec)
    if path.is_dir():
        if hf.is_hf_dir(path):
            return ModelSource(SourceKind.HF_DIR, str(spec), path)
        if (path / "model_config.yaml").is_file():
            return ModelSource(SourceKind.NEMO, str(spec), path)
        raise CheckpointError(f"{path} has neither config.json (Hugging Face) nor model_config.yaml (NeMo)")
    if path.is_file():
        if path.name == "config.json":
            return resolve(path.parent)
        if gguf.is_gguf(path):
            return ModelSource(SourceKind.GGUF, str(spec), path)
        _check_is_archive(path)
        return ModelSource(SourceKind.NEMO, str(spec), path)
    if str(spec).lower() in preset_names():
        return ModelSource(SourceKind.PRESET, str(spec), None)
    raise CheckpointError(f"model {str(spec)!r} is not a directory, a .nemo file or a preset name "
                          f"(presets: {', '.join(preset_names())})")


def _check_is_archive(path: Path) -> None:
    """A model file is a GGUF file or a .nemo tar; name what anything else looks like."""
    try:
        is_tar = archive.is_tar(path)
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror}") from None
    if is_tar:
        return
    if path.suffix == ".gguf":
        raise CheckpointError(f"{path} is named .gguf but is not a GGUF file (it does not start with 'GGUF')")
    hint = (" (a lone safetensors file: pass the directory that holds it and its config.json)"
            if path.suffix == ".safetensors" else "")
    raise CheckpointError(f"{path} is neither a GGUF file nor a .nemo archive (tar){hint}")


def parse_dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    if name is None or isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise ConfigError(f"unknown dtype {name!r}; use one of float32 (float), bfloat16, float16 (half)")
    return DTYPES[name]


def hf_config(directory: Path) -> ModelConfig | NemotronHConfig:
    """config.json of a Hugging Face directory, by its model_type."""
    if read_config_json(directory / "config.json").get("model_type") == "nemotron_h":
        return NemotronHConfig.from_json_file(directory / "config.json")
    return ModelConfig.from_json_file(directory / "config.json")


def load_config(spec: str | Path, trust_pickle: bool = False) -> ModelConfig | NemotronHConfig:
    """The configuration alone, without loading weights."""
    source = resolve(spec)
    if source.kind is SourceKind.HF_DIR:
        return hf_config(source.path)
    if source.kind is SourceKind.PRESET:
        return get_preset(source.spec)
    if source.kind is SourceKind.GGUF:  # as loaded: Q4_0 layers kept 4-bit, as the memory planner plans them
        return planned_gguf_config(gguf.read_gguf_config(source.path, keep_q4_0=True))
    from nemotron.checkpoint.nemo import read_nemo_config

    return read_nemo_config(source.path, trust_pickle=trust_pickle)


def planned_gguf_config(config: ModelConfig) -> ModelConfig:
    """A GGUF's config as the memory planner sees it: int4 layers with an int8 head where the file's Q4_0
    layers are kept, else dequantized. The planner's int4 has groups of 128 (a Q4_0 file's 32 add 0.375
    bits a weight); layers too narrow for them are planned dequantized (an upper bound)."""
    if config.quantization == "int4" and any(n % 128 for n in (config.hidden_size, config.intermediate_size,
                                                              config.num_heads * config.head_dim)):
        return config.replace(quantization=None, quantized_lm_head=False)
    return config


def load_model(spec: str | Path, *, dtype: str | torch.dtype | None = None, device: str | torch.device = "cpu",
               trust_pickle: bool = False, seed: int = 0, force: bool = False) -> LoadedModel:
    """`force` skips the check that the weights fit the device's free memory (memory planner figure)."""
    source = resolve(spec)
    torch_dtype = parse_dtype(dtype)
    if source.kind is SourceKind.PRESET:
        config = get_preset(source.spec)
        torch_dtype = torch_dtype or DTYPES[config.torch_dtype]
        preflight.check_fits(config, torch_dtype, device, source.spec, force)
        print(f"WARNING: {source.spec} is a preset: the model has RANDOM weights and produces noise",
              file=sys.stderr)
        if isinstance(config, NemotronHConfig):
            return _nemotron_h_preset(config, source, torch_dtype, device, seed)
        with torch.device(device):
            model = build_model(config).to(torch_dtype)
        init_random_weights(model, seed)
        return LoadedModel(model.eval(), config, None, source)

    layout: dict[str, int] = {}  # options of the quantized modules (int4 from a GGUF: group_size 32)
    tokenizer_error = None
    if source.kind is SourceKind.HF_DIR:
        config = hf_config(source.path)
        _check_layers(config, source.path)
        preflight.check_fits(config, torch_dtype or DTYPES[config.torch_dtype], device, source.spec, force)
        if isinstance(config, NemotronHConfig):
            return _load_nemotron_h(config, source, torch_dtype, device, trust_pickle)
        tensors = hf.iter_tensors(source.path, trust_pickle)
        tokenizer = _optional_tokenizer(source.path, config.vocab_size)
    elif source.kind is SourceKind.GGUF:
        checkpoint = gguf.read_gguf(source.path, keep_q4_0=True, dtype=torch_dtype)  # 4-bit layers stay 4-bit
        config, tensors, tokenizer = checkpoint.config, checkpoint.tensors, checkpoint.tokenizer
        tokenizer_error = checkpoint.tokenizer_error
        layout = checkpoint.quantized_layout or {}
        # Metadata so far: refuse before reading weights, planned as they will be held.
        preflight.check_fits(planned_gguf_config(config), torch_dtype or DTYPES[config.torch_dtype], device,
                             source.spec, force)
    else:
        config = load_config(source.path, trust_pickle)  # headers only: refuse before reading weights
        preflight.check_fits(config, torch_dtype or DTYPES[config.torch_dtype], device, source.spec, force)
        checkpoint = _read_nemo(source.path, trust_pickle, torch_dtype)
        config, tensors = checkpoint.config, checkpoint.state_dict
        tokenizer = _nemo_tokenizer(checkpoint, source.spec)
    torch_dtype = torch_dtype or DTYPES[config.torch_dtype]
    with torch.device("meta"):
        if isinstance(config, NemotronHConfig):  # a Nemotron-H .nemo
            from nemotron.model.nemotron_h import NemotronHForCausalLM

            model = NemotronHForCausalLM(config)
        else:
            model = build_model(config)
    if config.quantization is None:
        hf.load_state_dict_into(model, tensors, torch_dtype, device, source.spec)
    else:  # a `nemotron quantize` checkpoint: quantized modules first, their tensors kept as stored
        from nemotron.quant import load_quantized_into

        load_quantized_into(model, config.quantization, tensors, torch_dtype, device, source.spec,
                            config.quantized_lm_head, **layout)
    return LoadedModel(model.eval(), config, tokenizer, source, tokenizer_error)


def convert(src: str | Path, dst: str | Path, *, dtype: str | torch.dtype | None = None,
            trust_pickle: bool = False, max_shard_bytes: int = hf.DEFAULT_SHARD_BYTES,
            to: str = "hf", gguf_type: str = "f16") -> Path:
    """Any supported checkpoint -> a Hugging Face directory (config.json, safetensors, tokenizer)
    or, with `to="gguf"`, one GGUF file of type `gguf_type` (f32, f16, q8_0, q4_0)."""
    if to not in ("hf", "gguf"):
        raise ConfigError(f"unknown output format {to!r}; use hf or gguf")
    if to == "hf":
        hf.refuse_a_checkpoint_at(dst)
    source = resolve(src)
    if source.kind is SourceKind.PRESET:
        raise CheckpointError(f"{src!r} is a preset with random weights; there is nothing to convert")
    torch_dtype = parse_dtype(dtype)
    if source.kind is SourceKind.NEMO:
        checkpoint = _read_nemo(source.path, trust_pickle, torch_dtype)
        config, state_dict = checkpoint.config, checkpoint.state_dict
        tokenizer = _nemo_tokenizer(checkpoint, source.spec)
    elif source.kind is SourceKind.GGUF:
        checkpoint = gguf.read_gguf(source.path)
        if checkpoint.tokenizer is None and checkpoint.tokenizer_error:  # a converted model keeps its tokenizer
            raise CheckpointError(checkpoint.tokenizer_error)
        config, state_dict, tokenizer = checkpoint.config, dict(checkpoint.tensors), checkpoint.tokenizer
        torch_dtype = torch_dtype or DTYPES[config.torch_dtype]  # as config.json will say (the file's matrices)
    else:
        config = hf_config(source.path)
        if isinstance(config, ModelConfig) and hf.safetensors_only(source.path):  # headers, before any weight
            preflight.check_hf_shapes(config, {n: s for n, (s, _) in hf.tensor_shapes(source.path).items()},
                                      source.spec)
        state_dict = dict(hf.iter_tensors(source.path, trust_pickle))
        if isinstance(config, NemotronHConfig):  # NVIDIA's `backbone.` names -> transformers' `model.`
            from nemotron.model.nemotron_h import sanitize_name

            state_dict = {sanitize_name(name): t for name, t in state_dict.items()}
        else:
            preflight.check_hf_shapes(config, {n: tuple(t.shape) for n, t in state_dict.items()}, source.spec)
        tokenizer = _optional_tokenizer(source.path, config.vocab_size)
    if torch_dtype is not None and getattr(config, "quantization", None) is not None:
        raise CheckpointError(f"{src} is quantized ({config.quantization}): its tensors keep the dtypes they are "
                              "stored in; convert it without --dtype")
    with hf.writing(dst):
        if to == "gguf":
            if isinstance(config, NemotronHConfig):
                raise CheckpointError(f"{src}: GGUF export writes llama.cpp's nemotron architecture (Nemotron-4 "
                                      "family); Nemotron-H models are not supported")
            return gguf.write_gguf({hf.normalise_name(k): v for k, v in state_dict.items()}, config, tokenizer,
                                   dst, file_type=gguf_type)
        out = hf.save_hf_dir(state_dict, config, dst, dtype=torch_dtype, max_shard_bytes=max_shard_bytes)
        if tokenizer is not None:
            tokenizer.save(out)
    return out


def _nemotron_h_preset(config: NemotronHConfig, source: ModelSource, dtype: torch.dtype, device,
                      seed: int) -> LoadedModel:
    from nemotron.model import nemotron_h

    with torch.device(device):
        model = nemotron_h.NemotronHForCausalLM(config).to(dtype)
    nemotron_h.init_random_weights(model, seed)
    return LoadedModel(model.eval(), config, None, source)


def _load_nemotron_h(config: NemotronHConfig, source: ModelSource, dtype: torch.dtype | None, device,
                     trust_pickle: bool) -> LoadedModel:
    from nemotron.model import nemotron_h

    with torch.device("meta"):
        model = nemotron_h.NemotronHForCausalLM(config)
    tensors = ((nemotron_h.sanitize_name(name), t) for name, t in hf.iter_tensors(source.path, trust_pickle))
    hf.load_state_dict_into(model, tensors, dtype or DTYPES[config.torch_dtype], device, source.spec)
    return LoadedModel(model.eval(), config, _optional_tokenizer(source.path, config.vocab_size), source)


def _read_nemo(path: Path, trust_pickle: bool, dtype: torch.dtype | None):
    from nemotron.checkpoint.nemo import read_nemo  # tar/zarr/dcp readers only when needed

    return read_nemo(path, trust_pickle=trust_pickle, dtype=dtype)


def _nemo_tokenizer(checkpoint, spec: str) -> Tokenizer | None:
    if not checkpoint.tokenizer_model:
        return None
    if checkpoint.tokenizer_filename.endswith(".json"):  # a Hugging Face tokenizer (Nemotron-H's byte-level BPE)
        return Tokenizer.from_tokenizer_json_bytes(checkpoint.tokenizer_model,
                                                   source=f"{spec}/{checkpoint.tokenizer_filename}")
    return Tokenizer.from_sentencepiece_bytes(checkpoint.tokenizer_model,
                                              source=f"{spec}/{checkpoint.tokenizer_filename}")


def _check_layers(config: ModelConfig | NemotronHConfig, directory: Path) -> None:
    """The layer count against the safetensors headers, before a model of that many layers is built."""
    if hf.safetensors_only(directory):
        preflight.check_layers(config, list(hf.tensor_shapes(directory)), str(directory))


def _optional_tokenizer(directory: Path, vocab_size: int | None = None) -> Tokenizer | None:
    if (directory / "tokenizer.model").is_file() or (directory / "tokenizer.json").is_file():
        return Tokenizer.from_dir(directory, max_vocab=vocab_size)
    return None
