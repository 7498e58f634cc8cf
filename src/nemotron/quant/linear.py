"""Quantized replacements for `nn.Linear` (no bias): int8, int4 and FP8 weights.

Every tensor a module holds is indexed by output channel first (`weight` (N, K), `weight_packed`
(N, K/2), `weight_scale` (N,) or (N, K/128)), so q/k/v projections fuse by concatenating rows and a
checkpoint's tensors load by name and shape like any other.

Forward: on CPU every scheme dequantizes on the fly and calls `F.linear` (the reference numerics).
On CUDA, int8/int4 run a Triton kernel that reads the packed weights directly for up to
`KERNEL_MAX_ROWS` input rows (decode is bound by weight bytes read) and dequantize + cuBLAS above
that (prefill is bound by compute); FP8 runs `torch._scaled_mm` on both devices.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nemotron.errors import ConfigError

GROUP_SIZE = 128  # int4: input channels sharing one scale
KERNEL_MAX_ROWS = 256  # CUDA int8/int4: Triton kernel up to this many input rows, dequantize + cuBLAS above
FP8_MAX = 448.0  # largest finite float8_e4m3fn
_FP16_TINY = torch.finfo(torch.float16).tiny


class QuantizedLinear(nn.Module):
    """Common bookkeeping; subclasses define SCHEME, `tensor_specs`, `quantize_weight`, `dequantize`
    and `forward`."""

    SCHEME: str

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features

    @classmethod
    def from_float(cls, linear: nn.Linear) -> QuantizedLinear:
        if linear.bias is not None:
            raise ValueError("quantized linear layers have no bias; Nemotron's linear layers never do")
        module = cls(linear.in_features, linear.out_features)
        for name, tensor in cls.quantize_weight(linear.weight.detach()).items():
            module.register_buffer(name, tensor)
        return module

    @classmethod
    def empty(cls, in_features: int, out_features: int, device: torch.device | str, **layout) -> QuantizedLinear:
        """`layout`: the scheme's options (int4: group_size)."""
        module = cls(in_features, out_features, **layout)
        for name, (shape, dtype) in cls.tensor_specs(in_features, out_features, **layout).items():
            module.register_buffer(name, torch.empty(shape, dtype=dtype, device=device))
        return module

    @classmethod
    def concat(cls, modules: list[QuantizedLinear]) -> QuantizedLinear:
        """One module whose outputs are the modules' outputs side by side (fused q/k/v)."""
        fused = cls(modules[0].in_features, sum(m.out_features for m in modules), **modules[0].layout())
        for name in cls.tensor_specs(fused.in_features, fused.out_features, **fused.layout()):
            fused.register_buffer(name, torch.cat([getattr(m, name) for m in modules]))
        return fused

    def layout(self) -> dict[str, int]:
        """The options `empty` / `tensor_specs` take to build a module like this one."""
        return {}

    @staticmethod
    def tensor_specs(in_features: int, out_features: int) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        raise NotImplementedError

    @staticmethod
    def quantize_weight(weight: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def dequantize(self, dtype: torch.dtype = torch.float32) -> Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, scheme={self.SCHEME}"


QUANTIZE_BAND_ELEMENTS = 1 << 24  # weights quantized at a time


class Int8Linear(QuantizedLinear):
    """Weight-only int8, symmetric, one scale per output channel: w ≈ weight[n, k] · weight_scale[n]."""

    SCHEME = "int8"

    @staticmethod
    def tensor_specs(in_features, out_features):
        return {"weight": ((out_features, in_features), torch.int8),
                "weight_scale": ((out_features,), torch.float32)}

    @staticmethod
    def quantize_weight(weight: Tensor) -> dict[str, Tensor]:
        # A band of rows at a time: the float temporaries of a 256k-vocabulary head at once are several GB.
        n, k = weight.shape
        q = torch.empty((n, k), dtype=torch.int8, device=weight.device)
        scale = torch.empty(n, dtype=torch.float32, device=weight.device)
        step = max(1, QUANTIZE_BAND_ELEMENTS // max(1, k))
        for start in range(0, n, step):
            w = weight[start:start + step].float()
            scale[start:start + step] = band_scale = (w.abs().amax(dim=1) / 127).clamp_min(_FP16_TINY)  # (rows,)
            q[start:start + step] = torch.round(w / band_scale[:, None]).clamp(-127, 127).to(torch.int8)
        return {"weight": q, "weight_scale": scale}

    def dequantize(self, dtype: torch.dtype = torch.float32) -> Tensor:
        return dequantize_int8(self.weight, self.weight_scale, dtype)

    def forward(self, x: Tensor) -> Tensor:
        return int8_linear(x, self.weight, self.weight_scale)


def dequantize_int8(weight: Tensor, scale: Tensor, dtype: torch.dtype) -> Tensor:
    """int8 (N, K) rows times their float32 scales (N,), in `dtype`."""
    return (weight.float() * scale[:, None]).to(dtype)


def int8_linear(x: Tensor, weight: Tensor, scale: Tensor) -> Tensor:
    """x @ (weight · scale)ᵀ for int8 `weight` (N, K) and float32 `scale` (N,): Int8Linear's forward,
    also the tensor-parallel LM head's over its vocabulary rows."""
    if _use_kernel(x):
        from nemotron.quant.kernels import int8_matmul

        return int8_matmul(x, weight, scale)
    return F.linear(x, dequantize_int8(weight, scale, x.dtype))


class Int4Linear(QuantizedLinear):
    """Weight-only int4, symmetric, one float16 scale per group of 128 input channels.

    Values q in [-7, 7] are stored as q + 8, two per byte: within each group, byte j holds element j
    in its low nibble and element j + 64 in its high nibble (the split-halves layout of GGML's Q4_0),
    so unpacking is two shifts and a concatenation, no interleave.

    `group_size` 32 holds GGML's Q4_0 blocks exactly as stored (a GGUF's 4-bit layers load as they
    are, see nemotron.checkpoint.gguf): the nibbles in the same split-halves order, the float16 block
    scale, q in [-8, 7]. Quantizing here always uses 128 groups.
    """

    SCHEME = "int4"

    def __init__(self, in_features: int, out_features: int, group_size: int = GROUP_SIZE) -> None:
        super().__init__(in_features, out_features)
        self.group_size = group_size

    def layout(self) -> dict[str, int]:
        return {"group_size": self.group_size}

    @staticmethod
    def tensor_specs(in_features, out_features, group_size: int = GROUP_SIZE):
        if in_features % group_size:
            raise ConfigError(f"int4 needs layers whose input features are divisible by {group_size}, "
                              f"got {in_features}")
        return {"weight_packed": ((out_features, in_features // 2), torch.uint8),
                "weight_scale": ((out_features, in_features // group_size), torch.float16)}

    @staticmethod
    def quantize_weight(weight: Tensor) -> dict[str, Tensor]:
        n, k = weight.shape
        Int4Linear.tensor_specs(k, n)  # checks divisibility
        groups = weight.float().reshape(n, k // GROUP_SIZE, GROUP_SIZE)  # (N, G, 128)
        scale = (groups.abs().amax(dim=2) / 7).clamp_min(_FP16_TINY).half()  # (N, G), rounded before use
        q = torch.round(groups / scale.float()[..., None]).clamp(-7, 7).to(torch.uint8) + 8
        half = GROUP_SIZE // 2
        packed = q[..., :half] | (q[..., half:] << 4)  # (N, G, 64)
        return {"weight_packed": packed.reshape(n, k // 2), "weight_scale": scale}

    def codes(self) -> Tensor:
        """(N, K) int8 in [-7, 7] ([-8, 7] from a GGUF): the weights before scaling."""
        n = self.out_features
        packed = self.weight_packed.reshape(n, -1, self.group_size // 2)  # (N, G, group / 2)
        return (torch.cat([packed & 0xF, packed >> 4], dim=2).to(torch.int8) - 8).reshape(n, self.in_features)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> Tensor:
        n = self.out_features
        q = self.codes().reshape(n, -1, self.group_size)  # (N, G, group)
        return (q.float() * self.weight_scale.float()[..., None]).reshape(n, self.in_features).to(dtype)

    def forward(self, x: Tensor) -> Tensor:
        if _use_kernel(x):
            from nemotron.quant.kernels import int4_matmul

            return int4_matmul(x, self.weight_packed, self.weight_scale)
        return F.linear(x, self.dequantize(x.dtype))


class Fp8Linear(QuantizedLinear):
    """FP8 e4m3 weights (one float32 scale per output channel) and FP8 activations, scaled per token
    at run time: y = (x / a)₈ · (W / s)₈ᵀ · a · s with a = max|x_row| / 448, s = max|W_row| / 448.

    `torch._scaled_mm` does the FP8 matmul: on CUDA it needs compute capability 8.9 (Ada, Hopper);
    on CPU the same op runs as the reference (slow, exact same quantization of weights and inputs).
    """

    SCHEME = "fp8"

    @staticmethod
    def tensor_specs(in_features, out_features):
        return {"weight": ((out_features, in_features), torch.float8_e4m3fn),
                "weight_scale": ((out_features,), torch.float32)}

    @staticmethod
    def quantize_weight(weight: Tensor) -> dict[str, Tensor]:
        w = weight.float()
        scale = (w.abs().amax(dim=1) / FP8_MAX).clamp_min(_FP16_TINY)  # (N,)
        return {"weight": (w / scale[:, None]).to(torch.float8_e4m3fn), "weight_scale": scale}

    def dequantize(self, dtype: torch.dtype = torch.float32) -> Tensor:
        return (self.weight.float() * self.weight_scale[:, None]).to(dtype)

    def forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, x.shape[-1])  # (M, K)
        x_scale = (rows.abs().amax(dim=1, keepdim=True).float() / FP8_MAX).clamp_min(_FP16_TINY)  # (M, 1)
        x_fp8 = (rows.float() / x_scale).to(torch.float8_e4m3fn)
        # CUDA's row-wise scaled matmul writes bfloat16 only.
        out_dtype = torch.bfloat16 if x.is_cuda else x.dtype
        out = torch._scaled_mm(x_fp8, self.weight.t(), x_scale, self.weight_scale[None, :], out_dtype=out_dtype)
        return out.to(x.dtype).reshape(*x.shape[:-1], self.out_features)


SCHEMES: dict[str, type[QuantizedLinear]] = {cls.SCHEME: cls for cls in (Int8Linear, Int4Linear, Fp8Linear)}


def _use_kernel(x: Tensor) -> bool:
    """The Triton kernels take 16-bit activations on CUDA; fp32 and large batches dequantize instead."""
    rows = x.numel() // x.shape[-1]
    return x.is_cuda and x.dtype in (torch.bfloat16, torch.float16) and rows <= KERNEL_MAX_ROWS
