"""Quantization as a transform of a built model: decoder-layer `nn.Linear`s become quantized modules
of the scheme, and the LM head (unless kept) an int8 one whatever the scheme (`HEAD_CLASS`).

Embeddings, norms and the reward head stay as they are (see `nemotron.quant`). After quantizing,
each layer's q/k/v projections are fused into one `qkv_proj` (the rows of the three quantized
weights concatenated, which is exact for per-row scales), so a quantized model is always fused and
the engine's own `fuse_qkv` leaves it alone.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch import Tensor, nn

from nemotron.checkpoint.hf import normalise_name
from nemotron.errors import CheckpointError, ConfigError, NemotronError
from nemotron.model.config import QUANTIZATION_SCHEMES
from nemotron.model.nemotron import NemotronAttention
from nemotron.quant.linear import SCHEMES, Int8Linear, QuantizedLinear

# The LM head under every scheme: int8 with one scale per vocabulary row. Each logit keeps its row's
# own scale (error ~0.4% of the row's largest weight, well under int4's), and the head is read whole
# every decode step: 13.6% of the 8B shape's bytes, a fifth of Nemotron-Mini's (256k x 3072).
HEAD_CLASS = Int8Linear
HEAD_WEIGHT = "lm_head.weight"


def scheme_class(scheme: str) -> type[QuantizedLinear]:
    if scheme not in SCHEMES:
        raise ConfigError(f"unknown quantization scheme {scheme!r}; choose one of {', '.join(QUANTIZATION_SCHEMES)}")
    return SCHEMES[scheme]


def check_device(scheme: str, device: torch.device | str) -> None:
    """FP8 matmuls need compute capability 8.9 on CUDA (Ada, Hopper); CPU runs the reference op."""
    device = torch.device(device)
    if scheme == "fp8" and device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if (major, minor) < (8, 9):
            raise NemotronError(f"fp8 needs a GPU of compute capability 8.9 or newer (Ada, Hopper); "
                                f"{torch.cuda.get_device_name(device)} is {major}.{minor}: use int8 or int4")


@torch.no_grad()
def quantize(model: nn.Module, scheme: str, head: bool = True) -> nn.Module:
    """In place: every linear layer of the decoder layers -> `scheme`, and with `head` the LM head ->
    int8 (HEAD_CLASS); q/k/v fused afterwards."""
    for parent, name, linear, cls in list(quantized_linears(model, scheme, head)):
        check_device(cls.SCHEME, linear.weight.device)
        setattr(parent, name, cls.from_float(linear))
    return fuse_quantized_qkv(model)


def quantized_linears(model: nn.Module, scheme: str, head: bool) -> Iterator[
        tuple[nn.Module, str, nn.Linear, type[QuantizedLinear]]]:
    """(parent, name, layer, quantized class) of each linear layer a `scheme` model holds quantized:
    the decoder layers' in the scheme, then with `head` a language model's LM head in HEAD_CLASS."""
    cls = scheme_class(scheme)
    for parent, name, linear in decoder_linears(model):
        yield parent, name, linear, cls
    if head and isinstance(getattr(model, "lm_head", None), nn.Linear):
        yield model, "lm_head", model.lm_head, HEAD_CLASS


def fuse_quantized_qkv(model: nn.Module) -> nn.Module:
    for attention in model.modules():
        if isinstance(attention, NemotronAttention) and isinstance(attention.q_proj, QuantizedLinear):
            parts = [attention.q_proj, attention.k_proj, attention.v_proj]
            attention.qkv_proj = type(parts[0]).concat(parts)
            attention.q_proj = attention.k_proj = attention.v_proj = None
    return model


def is_quantized_name(name: str, head: bool = False) -> bool:
    """Does a checkpoint tensor named `name` (HF names) belong to a quantized linear layer's weight?
    `head`: the LM head is quantized too."""
    name = normalise_name(name)
    if name == HEAD_WEIGHT:
        return head
    parts = name.split(".")
    return (len(parts) == 6 and parts[:2] == ["model", "layers"] and parts[5] == "weight"
            and f"{parts[3]}.{parts[4]}" in _DECODER_LINEARS)


_DECODER_LINEARS = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                    "mlp.up_proj", "mlp.down_proj"}


def decoder_linears(model: nn.Module) -> Iterator[tuple[nn.Module, str, nn.Linear]]:
    for layer in model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name, child in parent.named_children():
                if isinstance(child, nn.Linear):
                    yield parent, name, child


def place_empty_quantized(model: nn.Module, scheme: str, head: bool, device: torch.device | str,
                          **layout) -> set[str]:
    """On a model built on the meta device: empty quantized modules where a `scheme` checkpoint (with
    a quantized LM head when `head`) stores quantized layers; returns their tensors' state-dict names,
    which load in their stored dtypes. `layout`: the scheme's module options (int4 group_size)."""
    check_device(scheme, device)
    layers = scheme_class(scheme)
    for parent, name, linear, cls in list(quantized_linears(model, scheme, head)):
        options = layout if cls is layers else {}  # (the head's own format has none)
        setattr(parent, name, cls.empty(linear.in_features, linear.out_features, "meta", **options))
    return {f"{prefix}.{buffer}" for prefix, module in model.named_modules()
            if isinstance(module, QuantizedLinear) for buffer in module._buffers}


def load_quantized_into(model: nn.Module, scheme: str, tensors: Iterator[tuple[str, Tensor]] | Mapping[str, Tensor],
                        dtype: torch.dtype, device: torch.device | str, source: str, head: bool = False,
                        **layout) -> None:
    """Fill a model built on the meta device from a `nemotron quantize` checkpoint (unfused HF names):
    quantized modules replace the decoder linears (and with `head` the LM head), quantized tensors
    keep their stored dtypes, the rest is cast to `dtype`; then q/k/v are fused. `layout`: the
    modules' options (int4 group_size)."""
    stored_as_is = place_empty_quantized(model, scheme, head, device, **layout)
    # Names and shapes as they are on disk: unfused q/k/v (fused after loading).
    expected = {name: (tuple(t.shape), t.dtype) for name, t in model.state_dict().items()}
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    loaded: dict[str, Tensor] = {}
    for raw_name, tensor in items:
        name = normalise_name(raw_name)
        if name not in expected:
            raise CheckpointError(f"{source}: unexpected tensor {raw_name!r} (shape {tuple(tensor.shape)}) "
                                  f"that this {scheme} model has no place for")
        shape, want = expected[name]
        if tuple(tensor.shape) != shape:
            raise CheckpointError(f"{source}: tensor {raw_name!r} has shape {tuple(tensor.shape)}, "
                                  f"the configuration expects {shape}")
        if name not in stored_as_is:
            loaded[name] = tensor.to(device=device, dtype=dtype)  # unquantized parameters: compute dtype
        elif tensor.dtype != want:
            raise CheckpointError(f"{source}: tensor {raw_name!r} is {tensor.dtype}; the {scheme} scheme stores {want}")
        else:
            loaded[name] = tensor.to(device=device)
    missing = sorted(set(expected) - set(loaded))
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise CheckpointError(f"{source}: missing tensor(s) {', '.join(missing[:3])}{more}")
    model.load_state_dict(loaded, strict=True, assign=True)
    fuse_quantized_qkv(model)
