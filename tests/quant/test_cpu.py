"""CPU kernels for bf16 models: each packed module against a matmul with its dequantized weight, on
both sides of the row threshold; the engine on CPU kernels against the reference decoders; the CPU
default dtype."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nemotron.engine.generate import generate
from nemotron.engine.llm import LLM
from nemotron.engine.llm_engine import EngineConfig
from nemotron.engine.sampling import SamplingParams
from nemotron.quant import quantize
from nemotron.model.nemotron import LayerNorm1p
from nemotron.quant.cpu import (GEMV_MAX_ROWS, CpuInt4Linear, CpuInt8Linear, OneOpLayerNorm1p, PackedLinear,
                                default_cpu_dtype, int8_dot_products, use_cpu_kernels)
from nemotron.quant.linear import Int4Linear, Int8Linear
from nemotron.quant.quality import PLANTED_CONFIG, QualityProbe, planted_map_model

ROWS = [1, GEMV_MAX_ROWS, GEMV_MAX_ROWS + 3]  # kernel, kernel at its limit, dequantize + oneDNN


def linear(out_features: int = 192, in_features: int = 256) -> nn.Linear:
    torch.manual_seed(out_features)
    layer = nn.Linear(in_features, out_features, bias=False)
    with torch.no_grad():
        layer.weight[7] *= 30  # rows of different magnitude: per-row / per-group scales must follow
    return layer


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.float() - expected).norm() / expected.norm()).item()


@pytest.mark.parametrize("rows", ROWS)
def test_packed_bf16_is_bitwise_f_linear(rows):
    weight = linear().weight.detach().bfloat16()
    x = torch.randn(2, rows, 256).bfloat16()
    assert torch.equal(PackedLinear(weight)(x), F.linear(x, weight))


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("scheme", [(Int8Linear, CpuInt8Linear), (Int4Linear, CpuInt4Linear)],
                         ids=["int8", "int4"])
def test_quantized_kernels_equal_the_dequantized_matmul(scheme, rows, monkeypatch):
    reference_cls, cpu_cls = scheme
    reference = reference_cls.from_float(linear())
    # the weight-only kernels of CPUs without VNNI (int8 activations: tests below)
    monkeypatch.setattr("nemotron.quant.cpu.int8_dot_products", lambda: False)
    module = cpu_cls(reference, torch.bfloat16)
    x = torch.randn(1, rows, 256).bfloat16()
    expected = F.linear(x.float(), reference.dequantize())  # fp32 scales, fp32 arithmetic
    out = module(x)
    assert out.dtype == torch.bfloat16 and out.shape == (1, rows, 192)
    assert relative_error(out, expected) < 4e-3  # bf16 activations, scales and output: ~2^-8
    assert relative_error(F.linear(x, module.dequantize()), expected) < 4e-3


def quantized_row(row: torch.Tensor) -> torch.Tensor:
    """The row as fbgemm's dynamic linear sees it: uint8 over [min(x, 0), max(x, 0)], zero point rounded."""
    low, high = min(row.min().item(), 0.0), max(row.max().item(), 0.0)
    scale = (high - low) / 255
    zero = round(-low / scale)
    return (torch.clamp(torch.round(row / scale) + zero, 0, 255) - zero) * scale


@pytest.mark.skipif(not int8_dot_products(), reason="fbgemm's int8 path needs VNNI")
def test_int8_one_row_quantizes_the_row_and_matches_the_dequantized_matmul():
    reference = Int8Linear.from_float(linear())
    module = CpuInt8Linear(reference, torch.bfloat16)
    torch.manual_seed(3)
    for shape in [(1, 256), (1, 1, 256)]:
        x = (torch.randn(shape) * 2 + 0.3).bfloat16()
        x[..., 11] = 40  # an outlier channel: the row's scale follows it
        out = module(x)
        assert out.dtype == torch.bfloat16 and out.shape == (*shape[:-1], 192)
        exact = F.linear(x.float(), reference.dequantize())
        emulated = F.linear(quantized_row(x.float().flatten()).reshape(shape), reference.dequantize())
        assert relative_error(out, emulated) < 4e-3  # int32 products, then fp32 scales, bf16 output
        assert 1e-3 < relative_error(out, exact) < 3e-2  # the activations' 8-bit rounding, no more


@pytest.mark.skipif(not int8_dot_products(), reason="fbgemm's int8 path needs VNNI")
def test_int8_with_vnni_holds_one_copy_of_the_codes_and_dequantizes_from_it():
    """fbgemm's packed weight replaces the plain int8 one: 1 byte per weight, as the kernel reads."""
    reference = Int8Linear.from_float(linear())
    module = CpuInt8Linear(reference, torch.bfloat16)
    assert module.weight is None and module.packed is not None
    assert not any(t.dtype == torch.int8 for t in [*module.parameters(), *module.buffers()])
    assert torch.equal(module.codes(), reference.weight)
    assert torch.equal(module.dequantize(), reference.weight.bfloat16() * reference.weight_scale.bfloat16()[:, None])


@pytest.mark.skipif(not int8_dot_products(), reason="fbgemm's int8 path needs VNNI")
def test_int8_one_row_keeps_fp32_between_layers_and_the_trunk_returns_the_model_dtype():
    """fbgemm returns fp32: o_proj, up_proj and down_proj leave it so (residual stream and norms in
    fp32), qkv_proj's output goes to the KV cache in the model's dtype, the final norm returns it."""
    model = bf16_model("int8").model
    use_cpu_kernels(model)
    layer = model.model.layers[0]
    assert layer.self_attn.qkv_proj.one_row_dtype == torch.bfloat16
    assert {m.one_row_dtype for m in (layer.self_attn.o_proj, layer.mlp.up_proj, layer.mlp.down_proj)} == {torch.float32}
    seen = {}
    layer.mlp.register_forward_hook(lambda module, args, out: seen.update(mlp_in=args[0].dtype, mlp_out=out.dtype))
    with torch.inference_mode():
        for ids in ([[5]], [[5, 17, 33]]):  # one row: fp32 inside; several: bf16 throughout
            hidden = model.model(torch.tensor(ids))
            assert hidden.dtype == torch.bfloat16
            assert seen == ({"mlp_in": torch.float32, "mlp_out": torch.float32} if len(ids[0]) == 1
                            else {"mlp_in": torch.bfloat16, "mlp_out": torch.bfloat16})
        x = torch.randn(1, 3, layer.mlp.up_proj.in_features)  # fp32 rows on the batched path: converted
        assert layer.mlp.up_proj(x).dtype == torch.bfloat16


def test_the_transform_pins_submodules_and_parameters_and_setattr_replaces_them():
    model = bf16_model(None).model
    use_cpu_kernels(model)
    layer = model.model.layers[0]
    assert vars(layer)["mlp"] is layer._modules["mlp"] and vars(layer.input_layernorm)["weight"] is layer.input_layernorm._parameters["weight"]
    replacement = nn.Identity()
    layer.mlp = replacement  # nn.Module.__setattr__ drops the pinned copy
    assert layer.mlp is replacement and "mlp" not in vars(layer)
    weight = nn.Parameter(torch.zeros_like(layer.input_layernorm.weight))
    layer.input_layernorm.weight = weight
    assert layer.input_layernorm.weight is weight


def quantized_rows(rows: torch.Tensor) -> torch.Tensor:
    """Rows as rowwise_int8_linear quantizes them: each over [-max |x|, max |x|] in 255 steps, zero point 128."""
    magnitude = rows.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    step = 2 / 255
    return (torch.clamp(torch.round(rows / magnitude / step) + 128, 0, 255) - 128) * step * magnitude


@pytest.mark.skipif(not int8_dot_products(), reason="fbgemm's int8 path needs VNNI")
def test_int8_rows_are_quantized_row_by_row_whatever_their_neighbours():
    reference = Int8Linear.from_float(linear())
    module = CpuInt8Linear(reference, torch.bfloat16)
    torch.manual_seed(5)
    x = (torch.randn(1, GEMV_MAX_ROWS + 7, 256) * 2 + 0.3).bfloat16()
    x[0, 2] *= 500  # a row of large activations must not cost the others their precision
    x[0, 4] = 0  # a row of zeros gives zeros
    x[0, 6, 11] = -60  # an outlier channel: its row's scale follows it
    out = module(x)
    assert out.dtype == torch.bfloat16 and out.shape == (1, GEMV_MAX_ROWS + 7, 192)
    rows = x[0].float()
    exact = F.linear(rows, reference.dequantize())
    emulated = F.linear(quantized_rows(rows), reference.dequantize())
    assert torch.equal(out[0, 4], torch.zeros(192, dtype=torch.bfloat16))
    for i in range(rows.shape[0]):
        if i != 4:
            assert relative_error(out[0, i], emulated[i]) < 4e-3  # int32 products, fp32 scales, bf16 output
            assert 1e-3 < relative_error(out[0, i], exact[i]) < 3e-2  # the 8-bit rounding of its own row only
    # Each row's result is its own: the same rows in another batch (more than the kernel threshold) agree bitwise.
    others = torch.cat([x[0, 5:], torch.randn(GEMV_MAX_ROWS, 256).bfloat16() * 100, x[0, :5]])
    shuffled = module(others)
    assert torch.equal(shuffled[:x.shape[1] - 5], out[0, 5:]) and torch.equal(shuffled[-5:], out[0, :5])


def test_cpu_layers_count_the_bytes_of_their_kernel_layout(monkeypatch):
    """What a decode step reads of each layer (the benchmarks' bandwidth figures): 1 byte a weight for
    int8 in either copy, fbgemm's packed one (not a tensor) or the plain codes, ½ for int4."""
    n, k = 192, 256
    int8 = CpuInt8Linear(Int8Linear.from_float(linear()), torch.bfloat16)
    assert int8.stored_bytes() == n * k + 2 * n  # codes + bf16 scales
    monkeypatch.setattr("nemotron.quant.cpu.int8_dot_products", lambda: False)
    assert CpuInt8Linear(Int8Linear.from_float(linear()), torch.bfloat16).stored_bytes() == n * k + 2 * n
    int4 = CpuInt4Linear(Int4Linear.from_float(linear()), torch.bfloat16)
    assert int4.stored_bytes() == n * k // 2 + (k // 128) * n * 2 * 2  # nibbles + bf16 scales and zeros
    assert PackedLinear(linear().weight.bfloat16()).stored_bytes() == n * k * 2


@pytest.mark.parametrize("native", [True, False])
def test_bf16_layers_widen_to_fp32_from_a_few_rows_where_bf16_is_not_native(monkeypatch, native):
    """Without native bf16, oneDNN emulates it (4x slower than widening at 512 rows on an AVX-512 Xeon): from
    WIDENED_ROWS rows the layer multiplies its widened weight in fp32, the very products F.linear makes in
    fp32, in blocks of output rows below WHOLE_WIDENED_ROWS and whole from there (in blocks again when the
    whole copy would be too large); fewer rows, and every row count on a bf16 CPU, stay on oneDNN's kernel."""
    from nemotron.quant.cpu import LINEAR_POINTWISE, WHOLE_WIDENED_ROWS, WIDENED_ROWS

    monkeypatch.setattr("nemotron.quant.cpu.cpu_supports_bf16", lambda: native)
    monkeypatch.setattr("nemotron.quant.cpu.WIDENED_BLOCK", 64 * 256)  # blocks of 64 of the 200 rows
    weight = linear(200).weight.bfloat16()
    layer = PackedLinear(weight)
    assert layer.widens is not native
    onednn_rows, widened, real_linear = [], [], F.linear

    def onednn(x, *args):
        onednn_rows.append(x.shape[1])
        return LINEAR_POINTWISE(x, *args)

    def widened_linear(x, w):
        widened.append((x.shape[1], w.shape[0], w.dtype))
        return real_linear(x, w)

    monkeypatch.setattr("nemotron.quant.cpu.LINEAR_POINTWISE", onednn)
    monkeypatch.setattr("nemotron.quant.cpu.F.linear", widened_linear)
    counts = (1, WIDENED_ROWS - 1, WIDENED_ROWS, WHOLE_WIDENED_ROWS - 1, WHOLE_WIDENED_ROWS)
    for rows in counts:
        x = torch.randn(1, rows, weight.shape[1]).bfloat16()  # the engine's (1, T, H) batches
        expected = real_linear(x.float(), weight.float()).bfloat16()
        torch.testing.assert_close(layer(x), expected)  # the same products; the sums' order may differ
    if native:
        assert onednn_rows == list(counts) and not widened
        return
    blocks = [(rows, n, torch.float32) for rows in counts[2:4] for n in (64, 64, 64, 8)]
    assert onednn_rows == [1, WIDENED_ROWS - 1]
    assert widened == blocks + [(WHOLE_WIDENED_ROWS, 200, torch.float32)]
    monkeypatch.setattr("nemotron.quant.cpu.WIDENED_MAX_BYTES", weight.numel() * 4 - 1)
    widened.clear()
    layer(torch.randn(1, WHOLE_WIDENED_ROWS, weight.shape[1]).bfloat16())
    assert [n for _, n, _ in widened] == [64, 64, 64, 8]  # a whole copy too large: in blocks
    monkeypatch.setattr("nemotron.quant.cpu.WIDENED_BLOCKS", 2)
    widened.clear()
    layer(torch.randn(1, WIDENED_ROWS, weight.shape[1]).bfloat16())
    assert [n for _, n, _ in widened] == [100, 100]  # no more blocks than WIDENED_BLOCKS: larger ones


@pytest.mark.parametrize("native", [True, False])
def test_emulated_bf16_layers_keep_the_plain_weight(monkeypatch, native):
    """Where bf16 is emulated, oneDNN's one-row layout is the plain one (a weight reordered for one row stays
    row-major), so the layer hands oneDNN the weight as it is: the same results as that reordered copy, and
    no copy made. fp32 weights, and bf16 ones on a bf16 CPU, are reordered into oneDNN's default layout."""
    from nemotron.quant.cpu import LINEAR_POINTWISE, WIDENED_ROWS

    monkeypatch.setattr("nemotron.quant.cpu.cpu_supports_bf16", lambda: native)
    reorder = torch.ops.mkldnn._reorder_linear_weight
    reordered = []
    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_linear_weight",
                        lambda weight, rows: reordered.append((weight.dtype, rows)) or reorder(weight, rows))
    weight = linear().weight.detach()
    bf16, fp32 = weight.bfloat16(), weight
    bf16_layer, fp32_layer = PackedLinear(bf16), PackedLinear(fp32)
    if native:
        assert reordered == [(torch.bfloat16, None), (torch.float32, None)] and bf16_layer.weight.is_mkldnn
    else:
        assert reordered == [(torch.float32, None)]
        assert bf16_layer.weight.data_ptr() == bf16.data_ptr()  # the weight itself, not a copy
        for rows in range(1, WIDENED_ROWS):
            x = torch.randn(1, rows, weight.shape[1]).bfloat16()
            assert torch.equal(bf16_layer(x), LINEAR_POINTWISE(x, reorder(bf16, 1), None, "none", [None], ""))
    x = torch.randn(1, 1, weight.shape[1])
    torch.testing.assert_close(bf16_layer(x.bfloat16()), F.linear(x.bfloat16(), bf16))
    torch.testing.assert_close(fp32_layer(x), F.linear(x, fp32), rtol=1e-5, atol=1e-5)


def test_the_matmul_floor_runs_the_layers_the_engine_packed(monkeypatch):
    """benchmarks/decode.py's CPU limit over a model the engine has put on its kernels (there are no
    nn.Linear left to find then): every layer of the step runs, in its kernel layout."""
    from benchmarks.common import matmul_floor

    loaded = bf16_model(None)
    LLM(loaded, EngineConfig(max_num_seqs=2))
    calls = []
    monkeypatch.setattr(PackedLinear, "__call__", lambda self, x: calls.append(x.shape) or self.forward(x))
    assert matmul_floor(loaded.model, 2, torch.device("cpu"), repeats=1) > 0
    packed = [m for m in loaded.model.modules() if isinstance(m, PackedLinear)]
    assert packed and len(calls) == 2 * len(packed)  # a warm-up pass and a timed one
    assert all(shape[0] == 2 for shape in calls)


def test_int4_kernel_layout_unpacks_to_the_stored_codes():
    reference = Int4Linear.from_float(linear())
    module = CpuInt4Linear(reference, torch.bfloat16)
    assert module.weight.shape == (192, 128) and module.weight.dtype == torch.uint8
    assert torch.equal(module.codes(), reference.codes())


@pytest.mark.parametrize("shape", [(1, 1, 1024), (1, 37, 192), (3, 5, 4096)])
def test_one_op_norm_is_bitwise_the_three_op_norm(shape):
    torch.manual_seed(shape[-1])
    norm = LayerNorm1p(shape[-1], 1e-5)
    with torch.no_grad():
        norm.weight.normal_(0, 0.1)
        norm.bias.normal_(0, 0.1)
    norm.bfloat16()
    x = (torch.randn(shape) * 3 + 1).bfloat16()
    with torch.inference_mode():
        assert torch.equal(OneOpLayerNorm1p.sharing(norm)(x), norm(x))


@pytest.mark.parametrize("rows", ROWS + [512])
def test_packed_fp32_equals_f_linear_up_to_summation_order(rows):
    weight = linear().weight.detach()
    x = torch.randn(2, rows, 256)
    torch.testing.assert_close(PackedLinear(weight)(x), F.linear(x, weight), rtol=1e-5, atol=1e-5)


def test_the_transform_packs_bf16_linears_and_fp32_ones_when_asked():
    fp32 = planted_map_model().model
    assert use_cpu_kernels(fp32) is fp32 and isinstance(fp32.lm_head, nn.Linear)  # MKL fp32 by default
    assert use_cpu_kernels(fp32, fp32=True) is fp32 and isinstance(fp32.lm_head, PackedLinear)
    assert fp32.lm_head.weight.dtype == torch.float32
    assert isinstance(fp32.model.layers[0].input_layernorm, LayerNorm1p)  # fp32 norms: one op already
    assert not isinstance(fp32.model.layers[0].input_layernorm, OneOpLayerNorm1p)
    kept_head = planted_map_model().model.bfloat16()
    use_cpu_kernels(quantize(kept_head, "int8", head=False))
    assert isinstance(kept_head.lm_head, PackedLinear) and kept_head.lm_head.weight.dtype == torch.bfloat16
    model = planted_map_model().model.bfloat16()
    quantize(model, "int8")
    use_cpu_kernels(model)
    assert isinstance(model.lm_head, CpuInt8Linear)  # the int8 head: fbgemm too
    layer = model.model.layers[0]
    assert isinstance(layer.self_attn.qkv_proj, CpuInt8Linear) and isinstance(layer.mlp.down_proj, CpuInt8Linear)
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    assert isinstance(layer.input_layernorm, OneOpLayerNorm1p) and isinstance(model.model.norm, OneOpLayerNorm1p)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_runtime_lora_adapters_are_left_to_compute_their_delta(dtype):
    """A LoraLinear is an nn.Linear whose output is more than its weight's: never packed as a plain one."""
    from nemotron.model.lora import LoraConfig, LoraLinear, apply_lora

    model = planted_map_model().model.to(dtype)
    apply_lora(model, LoraConfig(r=4, target_modules=("q_proj", "up_proj")))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    ids = torch.tensor([[5, 17, 33, 8, 100]])
    with torch.inference_mode():
        expected = model(ids)
        use_cpu_kernels(model, fp32=True)
        assert isinstance(model.model.layers[0].mlp.up_proj, LoraLinear)
        assert isinstance(model.model.layers[0].mlp.down_proj, PackedLinear)
        torch.testing.assert_close(model(ids), expected, rtol=1e-5, atol=1e-5)


def bf16_model(scheme: str | None):
    loaded = planted_map_model()
    if scheme is not None:
        quantize(loaded.model, scheme)
    for param in loaded.model.parameters():
        param.data = param.data.bfloat16()
    return loaded


@pytest.mark.parametrize("scheme", [None, "int8", "int4"])
def test_engine_on_cpu_kernels_equals_the_reference_decoder_on_them(scheme):
    """The engine's batched, paged decoding over the packed modules gives the tokens the reference
    decoder gives over the same modules (one request at a time, contiguous cache)."""
    loaded = bf16_model(scheme)
    llm = LLM(loaded, EngineConfig(max_num_seqs=4))
    assert not any(isinstance(m, nn.Linear) for m in loaded.model.modules())
    prompts = [[5, 17, 33, 8, 100, 7, 9, 200, 11, 12], [250, 3, 3, 9], [40, 41]]
    params = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
    results = llm.generate(prompts, params)
    for prompt, result in zip(prompts, results):
        assert result.outputs[0].token_ids == generate(loaded.model, loaded.tokenizer, prompt, params).token_ids


def test_engine_with_fp32_kernels_equals_the_reference_decoder_on_them():
    loaded = planted_map_model()
    llm = LLM(loaded, EngineConfig(max_num_seqs=4, cpu_fp32_kernels=True))
    assert isinstance(loaded.model.lm_head, PackedLinear)
    prompts = [[5, 17, 33, 8, 100, 7, 9, 200, 11, 12], [250, 3, 3, 9]]
    params = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
    for prompt, result in zip(prompts, llm.generate(prompts, params)):
        assert result.outputs[0].token_ids == generate(loaded.model, loaded.tokenizer, prompt, params).token_ids


def test_cpu_bf16_and_int8_keep_95_percent_of_fp32_greedy_tokens():
    """On the decisive planted-map model, decoding through the CPU kernels (bf16 oneDNN; int8 by
    fbgemm with each row's activations in 8 bits) stays with the fp32 reference: the bar benchmarks/quant_quality.py reports for the issue."""
    probe = QualityProbe(planted_map_model(), PROMPTS, 32)
    # bf16 ~0.01 relative; int8 rounds each activation row to 8 bits as well (~0.022); int4 through
    # the same kernels: ~0.12, KL ~1e-2; a broken kernel is far worse
    for scheme, bound in ((None, 0.02), ("int8", 0.03)):
        report = probe.compare(bf16_model(scheme))
        assert report.prefix_agreement >= 0.95, (scheme, report.summary())
        assert report.logits_relative_error < bound and report.mean_kl < 1e-3, (scheme, report.summary())


@pytest.mark.skipif(not int8_dot_products(), reason="the one-row int8 path needs VNNI")
def test_cpu_int8_at_batch_1_keeps_95_percent_of_fp32_greedy_tokens():
    """One sequence at a time, int8 decodes through fbgemm's int8 activations: the same bar."""
    probe = QualityProbe(planted_map_model(), PROMPTS, 32)
    report = probe.compare(bf16_model("int8"), batch_size=1)
    assert report.prefix_agreement >= 0.95, report.summary()


PROMPTS = [[(7 * i + 3 * j) % (PLANTED_CONFIG.vocab_size - 4) + 4 for j in range(12)] for i in range(8)]


def test_default_cpu_dtype_follows_native_bf16(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert default_cpu_dtype() == torch.bfloat16
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert default_cpu_dtype() == torch.float32


def test_info_and_the_cli_default_show_the_cpu_dtype(capsys, monkeypatch):
    from nemotron.cli.main import auto_dtype, main

    assert main(["info", "nemotron-4-340b"]) == 0
    expected = str(default_cpu_dtype()).removeprefix("torch.")
    assert f"on this CPU  computes in {expected} by default" in capsys.readouterr().out
    assert auto_dtype("cpu") == expected
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert auto_dtype("cpu") == "float32"
