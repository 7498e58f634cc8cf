"""CPU kernels for the linear layers, chosen and prepacked once when the engine takes a bf16 (or fp32) model.

| weights | one row (batch-1 decode)        | up to `GEMV_MAX_ROWS` rows (decode) | more rows (prefill, batches)    |
|---------|---------------------------------|-------------------------------------|---------------------------------|
| bf16    | oneDNN matmul on a weight reordered once | the same                   | the same                        |
| bf16, emulated (no AVX-512 BF16 / AMX) | oneDNN on the plain weight | 2-3 rows the same; from 4 widened to fp32 in blocks | fp32, whole from 64 rows |
| int8, VNNI | fbgemm int8 x int8, the row quantized at run time | the same, each row with its own scale | the same |
| int8    | `torch._weight_int8pack_mm`      | the same                            | dequantized to bf16, oneDNN     |
| int4    | `torch._weight_int4pack_mm_for_cpu` | the same                        | dequantized to bf16, oneDNN     |
| fp32    | `F.linear` (MKL); oneDNN prepacked when asked | the same              | the same                        |

A batch-1 decode step is bound by the bytes of weights read: `F.linear` on bf16 reorders the weight
into oneDNN's blocked layout on every call (3-4x slower than the prepacked matmul at one row), and
the int8 / int4 kernels read 1 or ½ byte per weight. Those kernels compute one row at a time, so
above a few rows the dequantize-then-matmul path is faster. Results: bf16 is bitwise `F.linear`
(the same oneDNN matmul, minus the reorder); int8 / int4 equal a matmul with the dequantized
weight up to bf16 rounding (their scales are held in bf16, the activations' dtype).

int8 at one row: `_weight_int8pack_mm` reads int8 no faster than oneDNN reads bf16 (~19 vs ~34 GB/s
on one AVX-512 core), so a batch-1 int8 decode gained nothing over bf16. fbgemm's dynamic int8
linear (`torch.ops.quantized.linear_dynamic`, VNNI dot products) reads it at ~29 GB/s: the row is
quantized to uint8 with its own scale and zero point (min/max over the row, like llama.cpp's q8_0
dot product quantizing activations per block of 32, here per row), multiplied in int32, scaled by
the row's and the channels' scales. Only a lone row takes this path (fbgemm quantizes a whole
input with one scale, which several rows would share); the extra error is the activations' 8-bit
rounding (~0.5-1% relative per layer): greedy agreement with fp32 95.5-97.4% on the quality probe's
decisive models, as bf16's (`benchmarks/quant_quality.py --batch-1`); on the less decisive ones it
falls with bf16, a few points below weight-only int8 (README, CPU path). Several rows take the same
kernel with each row quantized over its own range (`rowwise_int8_linear`): at 32 rows fbgemm's int8
products run ~1.5x oneDNN's bf16 ones, which at that size are bound by arithmetic, not by the weight's
bytes; at 2-8 rows it reads the weight faster than `_weight_int8pack_mm` (greedy agreement of a batched
decode 96.3-96.6% on the decisive models, against 97.0-97.3% with weight-only int8).
Its prepacked copy of the weight (1 byte per weight) replaces the plain one (`dequantize` unpacks it):
a CPU int8 model holds and reads 1 byte per weight.
The CPU must have VNNI (AVX512-VNNI / AVX-VNNI): without it fbgemm's 16-bit pair sums can saturate,
and int8 stays on `_weight_int8pack_mm` and the dequantized matmul.

fp32 linear layers can be prepacked for oneDNN too (`EngineConfig(cpu_fp32_kernels=True)`): `F.linear`
in fp32 goes to MKL, which reads a one-row weight at ~17 GB/s per core against oneDNN's ~33 (a
batch-1 fp32 decode of the 140M shape: 33 -> 21 CPU ms per token; prefill and batches 2.5-8x faster
as well). The sums are ordered differently, so results differ from `F.linear` by float rounding
(~1e-6 relative): not the default, because fp32 is the reference precision that tensor-parallel ranks
(which keep `F.linear`) and the reference decoder are compared against token for token. fp16 has
no fast CPU path.
"""
from __future__ import annotations

import functools
import warnings
from typing import Callable, List, Optional  # noqa: UP035 - List / Optional for TorchScript

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nemotron.model.nemotron import LayerNorm1p, replace_modules
from nemotron.quant.linear import Int4Linear, Int8Linear

GEMV_MAX_ROWS = 8  # int8 / int4 kernels up to this many rows; dequantize + oneDNN above
# The overload's bound C++ function: no per-call overload resolution, and not OpOverload.__call__'s
# Python check for fake script objects in the arguments (~1 us a call, 49 calls a batch-1 step).
LINEAR_DYNAMIC = getattr(torch.ops.quantized.linear_dynamic.default, "_op", torch.ops.quantized.linear_dynamic.default)
# The same for oneDNN's prepacked linear: the overload packet's Python __call__ cost ~0.5 us of a ~6 us call.
LINEAR_POINTWISE = getattr(torch.ops.mkldnn._linear_pointwise.default, "_op", torch.ops.mkldnn._linear_pointwise.default)
INT4_BLOCK_N = 64  # the CPU int4 layout interleaves output channels in blocks of 64


def cpu_supports_bf16() -> bool:
    """Native bf16 arithmetic (AVX-512 BF16 or AMX): bf16 matmuls run at twice fp32's rate."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def cpu_features() -> str:
    """What `default_cpu_dtype` went by, for `nemotron info`."""
    found = [name for name, present in (("AVX512-BF16", torch.cpu._is_avx512_bf16_supported()),
                                        ("AMX", torch.cpu._is_amx_tile_supported())) if present]
    return f"{torch.backends.cpu.get_cpu_capability()}, " + (" + ".join(found) or "no native bf16")


def default_cpu_dtype() -> torch.dtype:
    """Compute dtype for CPU inference when none is asked for: bf16 where the CPU computes in it
    natively (half the bytes per weight; int8 / int4 kernels take bf16 activations), else fp32."""
    return torch.bfloat16 if cpu_supports_bf16() else torch.float32


class CpuLinear(nn.Module):
    """A bias-free linear layer in a CPU kernel's layout; `weight` keeps the device and dtype that
    the engine reads (`lm_head.weight.dtype`), not a tensor to multiply with."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"

    def stored_bytes(self) -> int:
        """Bytes of the weight in its kernel layout (scales included): what one pass over it reads.
        The tensors are plain attributes, not parameters, so `parameters()` does not see them."""
        tensors = [v for v in vars(self).values() if isinstance(v, Tensor)]
        return sum(t.numel() * t.element_size() for t in tensors)


# A bf16 layer on a CPU without native bf16 multiplies in fp32 from WIDENED_ROWS rows (PackedLinear):
# below WHOLE_WIDENED_ROWS rows in blocks of WIDENED_BLOCK weights (1 MiB of fp32, within a core's L2),
# of at least 64 output rows and at most WIDENED_BLOCKS blocks a weight, so that a long K or a long N
# does not make thousands of calls; from it in one fp32 copy of the whole weight if that copy stays
# within WIDENED_MAX_BYTES (an 8B model's largest layer, 16384 x 4096, is 256 MiB; a 256k-vocabulary
# LM head, 3-4 GB in fp32, goes in blocks). Nemotron-Mini's head (256,000 x 3,072) at 4 / 8 rows, ms:
# 256 blocks of 1,000 rows 333 / 386, 1,024 blocks of 250 rows 246 / 303, its 3,012 blocks of 85 rows
# 236 / 302, oneDNN's emulated bf16 252 / 327.
WIDENED_ROWS = 4
WHOLE_WIDENED_ROWS = 64
WIDENED_BLOCK = 256 * 1024
WIDENED_BLOCKS = 1024
WIDENED_MAX_BYTES = 256 * 1024**2


class PackedLinear(CpuLinear):
    """bf16 or fp32 weight reordered once into oneDNN's blocked layout; on a CPU that emulates bf16, a
    bf16 weight as it is.

    On a CPU without native bf16 (no AVX-512 BF16 or AMX), oneDNN emulates bf16 products. Its fastest
    one-row layout there is the plain one: told to expect one row when it reorders such a weight, it
    keeps it row-major (`ab`, ONEDNN_VERBOSE), and its one-row matmul then read the 140M shape's layers
    4-8% faster than in the default layout (all 49 cycled out of cache; end to end 55.3 against 51.2
    tok/s over 4 interleaved pairs). So the plain weight goes to oneDNN as it is: the same results and
    speed as that reordered copy at 1, 2 and 8 rows, no copy at load, and a weight the widening below
    can read. fp32 layers gained nothing at one row from the hint and lost 10% at 32-512 rows; native
    bf16 is unmeasured: both keep oneDNN's default layout.

    From WIDENED_ROWS rows such a bf16 layer multiplies in fp32 instead, the weight widened at each call
    (`widened_linear`). All 49 layers of the 140M shape (2-core Xeon with AVX-512 alone, best of 3-5
    passes), emulated / widened in 256k-weight blocks / widened whole, ms: 1 row 18 / 32 / 35, 2 rows
    35 / 40 / 41, 4 rows 39 / 33 / 45-48, 8 rows 59 / 42 / 59, 16 rows 93-97 / 64-68 / 69-72, 32 rows 167 /
    84 / 90, 64 rows 316 / 117 / 112, 128 rows 589 / 197 / 169, 512 rows 2503 / 733 / 582 (the whole
    copy once warm: glibc's malloc and mimalloc both hand the freed fp32 copy to the next layer). The
    products are the same (a bf16 x bf16 product is exact in fp32, and both sum in fp32); only the order
    of the sums differs."""

    def __init__(self, weight: Tensor) -> None:
        super().__init__(weight.shape[1], weight.shape[0])
        self.dtype = weight.dtype
        self.widens = weight.dtype == torch.bfloat16 and not cpu_supports_bf16()
        if self.widens:
            self.weight = weight.detach().contiguous()
        else:
            self.weight = torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), None)  # opaque

    def forward(self, x: Tensor) -> Tensor:
        x = x if x.dtype is self.dtype else x.to(self.dtype)  # fp32 from an int8 layer's one-row output
        if self.widens and x.numel() >= WIDENED_ROWS * self.in_features:  # plain ops: a trace records them
            return widened_linear(x, self.weight).to(self.dtype)
        if torch._C._get_tracing_state() is not None:  # being recorded (engine.cpu_trace)
            return traceable_linear_pointwise()(x, self.weight)
        return LINEAR_POINTWISE(x, self.weight, None, "none", [None], "")


def widened_linear(x: Tensor, weight: Tensor) -> Tensor:
    """x (..., K) bf16 @ weight (N, K) bf16 -> (..., N) fp32, multiplied in fp32. Below
    WHOLE_WIDENED_ROWS rows the weight is widened a block of output rows at a time, each block's
    fp32 copy small enough to stay in cache while it is multiplied (at few rows a whole copy's
    trip through memory costs more than the products); from there, in one copy, whose products
    outweigh its trip, unless that copy would pass WIDENED_MAX_BYTES."""
    n, k = weight.shape
    wide = x.float()
    if x.numel() >= WHOLE_WIDENED_ROWS * k and weight.numel() * 4 <= WIDENED_MAX_BYTES:
        return F.linear(wide, weight.float())
    step = max(64, WIDENED_BLOCK // k, -(-n // WIDENED_BLOCKS))
    return torch.cat([F.linear(wide, weight[i:i + step].float()) for i in range(0, n, step)], dim=-1)


@functools.cache
def traceable_linear_pointwise() -> Callable[[Tensor, Tensor], Tensor]:
    """oneDNN's prepacked linear (no bias, no post-op) in a form the tracer records: the op's list of
    optional scalars is a type that only TorchScript's compiler produces, not the tracer."""

    def linear(x: Tensor, weight: Tensor) -> Tensor:
        scalars: List[Optional[number]] = [None]  # noqa: F821, UP006, UP045 - TorchScript's types, for its compiler
        return torch.ops.mkldnn._linear_pointwise(x, weight, None, "none", scalars, "")

    with warnings.catch_warnings():  # torch 2.13 marks TorchScript deprecated (engine.cpu_trace)
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(linear)


def int8_dot_products() -> bool:
    """fbgemm's dynamic int8 linear is usable and exact in int32: fbgemm built in, and VNNI (whose
    dot products accumulate u8 x s8 in int32, where plain AVX-512 goes through saturating int16)."""
    return "fbgemm" in torch.backends.quantized.supported_engines and torch.cpu._is_vnni_supported()


def fbgemm_pack(weight: Tensor, scale: Tensor):
    """int8 (N, K) and float32 scales (N,) -> fbgemm's packed weight (the codes as they are)."""
    with warnings.catch_warnings():  # quantized tensors are deprecated as a user API; this op still takes one
        warnings.simplefilter("ignore", UserWarning)
        qweight = torch._make_per_channel_quantized_tensor(
            weight, scale.double(), torch.zeros(weight.shape[0], dtype=torch.long), 0)
        return torch.ops.quantized.linear_prepack(qweight, None)


class CpuInt8Linear(CpuLinear):
    """On CPUs with VNNI, fbgemm's packed int8 weight, which computes every call with int8
    activations; elsewhere the int8 weight (N, K) as stored. Per-channel scales in bf16 either way.
    One copy of the codes: 1 byte per weight, not the 2 of bf16."""

    def __init__(self, module: Int8Linear, dtype: torch.dtype) -> None:
        super().__init__(module.in_features, module.out_features)
        self.scale = module.weight_scale.to(dtype)  # (N,)
        self.packed = fbgemm_pack(module.weight, module.weight_scale.float()) if int8_dot_products() else None
        # (N, K) int8, the weight-only kernels' layout already; fbgemm's packed copy replaces it.
        self.weight: Tensor | None = module.weight if self.packed is None else None
        # fbgemm takes and returns fp32: where the next op takes fp32 too (residual adds, norms, squared
        # ReLU, the next int8 layer), `use_cpu_kernels` sets fp32 here and two conversions go.
        self.one_row_dtype = dtype

    def stored_bytes(self) -> int:
        packed = 0 if self.packed is None else self.in_features * self.out_features  # fbgemm's copy: 1 byte each
        return super().stored_bytes() + packed

    def codes(self) -> Tensor:
        """(N, K) int8 as quantized, from whichever copy this layer holds."""
        if self.weight is not None:
            return self.weight
        return torch.ops.quantized.linear_unpack(self.packed)[0].int_repr()

    def dequantize(self) -> Tensor:
        return self.codes().to(self.scale.dtype) * self.scale[:, None]

    def forward(self, x: Tensor) -> Tensor:
        if self.packed is not None:  # VNNI: int8 x int8 dot products (reduce_range=False: all 8 bits)
            if x.numel() == self.in_features:  # one row: fbgemm quantizes it over its own range
                x = x if x.dtype is torch.float32 else x.float()
                # The packed weight is a ScriptObject: outside this context the op's __torch_function__ check
                # looks the attribute up on it, which throws and catches two C++ exceptions per call (~10 us).
                with torch._C.DisableTorchFunctionSubclass():
                    out = LINEAR_DYNAMIC(x, self.packed, False)
                return out if self.one_row_dtype is torch.float32 else out.to(self.one_row_dtype)
            rows = rowwise_int8_linear(x.reshape(-1, self.in_features), self.packed, self.scale.dtype)
            return rows.view(*x.shape[:-1], self.out_features)
        x = x if x.dtype is self.scale.dtype else x.to(self.scale.dtype)
        rows = x.reshape(-1, self.in_features)  # (M, K)
        if rows.shape[0] > GEMV_MAX_ROWS:  # scales applied to the output: one pass over the weight, not two
            return F.linear(x, self.weight.to(x.dtype)) * self.scale
        return torch._weight_int8pack_mm(rows, self.weight, self.scale).view(*x.shape[:-1], self.out_features)


@functools.cache
def range_row(width: int) -> Tensor:
    """[1, -1, 0, ...]: the row that pins fbgemm's dynamic range to [-1, 1] (`rowwise_int8_linear`)."""
    row = torch.zeros(width, dtype=torch.float32, device="cpu")  # not the process's default dtype / device
    row[:2] = torch.tensor((1.0, -1.0))
    return row


def rowwise_int8_linear(rows: Tensor, packed, dtype: torch.dtype) -> Tensor:
    """rows (M, K) -> (M, N) in `dtype` through fbgemm's int8 x int8 matmul, each row quantized to
    8 bits with its own scale (as llama.cpp's q8_0 quantizes activations per block of 32).

    fbgemm quantizes its whole input with one scale, which the rows of a batch would share: a row
    of large activations would cost its neighbours their precision, and a sequence's results would
    depend on what it is batched with. So each row is divided by its largest magnitude first, and a
    first row [1, -1, 0, ...] pins the input's range to exactly [-1, 1]: fbgemm's one scale is then
    2 / 255 for every batch, i.e. each row's own; the outputs are multiplied back by the magnitudes.
    This holds between batches of two rows or more: a lone row (batch-1 decode) goes to fbgemm as it
    is, over its own asymmetric range, so its rounding differs from the same row's in a batch.
    """
    count, width = rows.shape
    # (the fused vector_norm(inf) and a multiply writing bf16 take 5-10x longer than these ops on CPU)
    magnitude = rows.abs().amax(dim=1, keepdim=True).float().clamp_min_(torch.finfo(torch.float32).tiny)
    unit = torch.empty(count + 1, width, dtype=torch.float32, device=rows.device)
    unit[0] = range_row(width)
    torch.div(rows, magnitude, out=unit[1:])
    with torch._C.DisableTorchFunctionSubclass():  # (see CpuInt8Linear.forward)
        out = LINEAR_DYNAMIC(unit, packed, False)[1:]  # (M, N) fp32, weight scales applied
    return out.mul_(magnitude).to(dtype)


class CpuInt4Linear(CpuLinear):
    """int4 weight in the CPU kernel's layout, (N, K/2) uint8: within each block of 64 output
    channels, K runs of 32 bytes, byte i of run k holding channel i (low nibble) and i + 32 (high)
    at input k, as q + 8. Scales and zeros (K/group, N, 2) in bf16, the kernel's w = (q - 8) s + z."""

    def __init__(self, module: Int4Linear, dtype: torch.dtype) -> None:
        super().__init__(module.in_features, module.out_features)
        self.group_size = module.group_size
        codes = module.codes().to(torch.int32) + 8  # (N, K) in [0, 15]
        self.weight = torch._convert_weight_to_int4pack_for_cpu(codes, 1)  # (N, K/2) uint8
        scale = module.weight_scale.t().to(dtype)  # (K/group, N)
        self.scales_and_zeros = torch.stack([scale, torch.zeros_like(scale)], dim=-1).contiguous()

    def codes(self) -> Tensor:
        """(N, K) int8 in [-8, 7], unpacked from the kernel layout."""
        n, k = self.out_features, self.in_features
        blocks = self.weight.reshape(n // INT4_BLOCK_N, k, INT4_BLOCK_N // 2)  # (N/64, K, 32)
        halves = torch.stack([blocks & 0xF, blocks >> 4], dim=1)  # (N/64, 2, K, 32): channels i, i + 32
        return (halves.permute(0, 1, 3, 2).reshape(n, k).to(torch.int8) - 8)

    def dequantize(self) -> Tensor:
        scale = self.scales_and_zeros[..., 0].t().repeat_interleave(self.group_size, dim=1)  # (N, K)
        return self.codes().to(scale.dtype) * scale

    def forward(self, x: Tensor) -> Tensor:
        x = x if x.dtype is self.scales_and_zeros.dtype else x.to(self.scales_and_zeros.dtype)
        rows = x.reshape(-1, self.in_features)  # (M, K)
        if rows.shape[0] > GEMV_MAX_ROWS:
            return F.linear(x, self.dequantize())
        out = torch._weight_int4pack_mm_for_cpu(rows, self.weight, self.group_size, self.scales_and_zeros)
        return out.view(*x.shape[:-1], self.out_features)


class OneOpLayerNorm1p(LayerNorm1p):
    """LayerNorm1p on bf16 in one op instead of three (to fp32, normalise, back): the CPU layer norm
    takes bf16 input with fp32 scale and bias, computes in fp32 and rounds once, bitwise the same.
    fp32 input (an int8 model's residual stream at one row) stays fp32, except with `out_dtype`."""

    out_dtype: torch.dtype | None = None  # the final norm's: the trunk's output keeps the model's dtype

    def forward(self, x: Tensor) -> Tensor:
        scale, bias = self._scale_and_bias()
        out = torch.layer_norm(x, scale.shape, scale, bias, self.eps)  # F.layer_norm's op, minus its Python checks
        return out if self.out_dtype is None or out.dtype is self.out_dtype else out.to(self.out_dtype)


def cpu_module(module: nn.Module, dtype: torch.dtype, fp32: bool = False) -> nn.Module | None:
    """The CPU fast-path replacement of a layer computing in `dtype`, or None to keep it as it is."""
    if dtype == torch.bfloat16 and type(module) is LayerNorm1p:
        return OneOpLayerNorm1p.sharing(module)
    return cpu_linear(module, dtype, fp32)


def cpu_linear(module: nn.Module, dtype: torch.dtype, fp32: bool = False) -> CpuLinear | None:
    """The CPU kernel module for a linear layer computing in `dtype`, or None to keep it as it is.
    fp32 layers are packed only when asked (`fp32`)."""
    # Plain nn.Linear only: a subclass (a runtime LoRA adapter's LoraLinear) computes more than its weight.
    plain = type(module) is nn.Linear and module.bias is None and module.weight.dtype == dtype
    if dtype == torch.float32:
        return PackedLinear(module.weight) if fp32 and plain else None
    if dtype != torch.bfloat16:
        return None
    if plain:
        return PackedLinear(module.weight)
    if isinstance(module, Int8Linear):
        return CpuInt8Linear(module, dtype)
    if isinstance(module, Int4Linear) and module.out_features % INT4_BLOCK_N == 0:
        return CpuInt4Linear(module, dtype)
    return None


@torch.no_grad()
def use_cpu_kernels(model: nn.Module, fp32: bool = False) -> nn.Module:
    """Inference transform, in place: every linear layer of a bf16 model on the CPU (decoder
    layers and LM head; a reward head, with its bias, stays) -> its CPU kernel module, and the
    norms -> one-op norms; with `fp32`, an fp32 model's plain linear layers -> prepacked oneDNN.
    Weights are packed once here; the modules replaced are dropped, so memory does not double."""
    dtype = model.model.embed_tokens.weight.dtype
    if model.model.embed_tokens.weight.device.type != "cpu":
        return model
    replace_modules(model, lambda name, module: cpu_module(module, dtype, fp32))
    fp32_residual_stream(model, dtype)
    pin_submodules(model)
    return model


def pin_submodules(model: nn.Module) -> None:
    """Copy every module's submodules and parameters into its instance dict, where Python's attribute
    lookup finds them. nn.Module keeps them in `_modules` / `_parameters` and serves them from
    `__getattr__`, which Python calls only after its own lookup failed and made an AttributeError:
    ~0.7 us per read, ~170 reads per batch-1 step of the 140M shape (layers, attention, MLP, norms).
    Replacing one through setattr, as every transform does, drops the copy (nn.Module's `__setattr__`
    does; `load_state_dict` and `.to()` keep the same objects); setting one to None, deleting one,
    `register_parameter` / `add_module` over an existing name, `torch.func.functional_call` and
    parametrizations afterwards would see or leave the stale copy. Only the engine's CPU runner
    calls this, on a model it then only runs."""
    for module in model.modules():
        vars(module).update(module._modules)
        vars(module).update(module._parameters)


def fp32_residual_stream(model: nn.Module, dtype: torch.dtype) -> None:
    """int8 layers at one row leave fp32 as fbgemm returns it: o_proj and down_proj into the
    residual adds, up_proj into the squared ReLU, so the stream and the norms run in fp32 and each
    layer converts twice (qkv_proj's output to the KV cache's dtype, the attention output back)
    instead of eight times. The final norm returns `dtype`: the trunk's output dtype is the model's."""
    for layer in model.model.layers:
        for linear in (layer.self_attn.o_proj, layer.mlp.up_proj, layer.mlp.down_proj):
            if isinstance(linear, CpuInt8Linear):
                linear.one_row_dtype = torch.float32
    if isinstance(model.model.norm, OneOpLayerNorm1p):
        model.model.norm.out_dtype = dtype
