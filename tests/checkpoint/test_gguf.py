"""GGUF out and in: a tiny random model written by `nemotron convert --to gguf` and read back through
`load_model` gives the same logits (exactly in f32; within quantization error in q8_0 / q4_0), with
its tokenizer; llama.cpp reads the file too when `llama_cpp` is installed."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nemotron.checkpoint import gguf as gguf_io
from nemotron.checkpoint.load import SourceKind, convert, load_config, load_model, resolve
from nemotron.cli.main import main
from nemotron.errors import CheckpointError
from nemotron.tokenizer import Tokenizer
from tests.conftest import TINY_CONFIG

TEXT = "The cat sees <extra_id_1> a bird. Über café? 😀"


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).float()


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    return load_model(tiny_model_dir, dtype="float32")


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, TINY_CONFIG.vocab_size, (2, 19), generator=torch.Generator().manual_seed(0))


def test_f32_round_trip_keeps_logits_config_and_tokenizer(tiny_model_dir, reference, ids, tmp_path):
    path = convert(tiny_model_dir, tmp_path / "model.gguf", to="gguf", gguf_type="f32")
    assert resolve(path).kind is SourceKind.GGUF
    loaded = load_model(path, dtype="float32")
    assert loaded.config == TINY_CONFIG
    assert load_config(path) == TINY_CONFIG
    torch.testing.assert_close(_logits(loaded.model, ids), _logits(reference.model, ids), rtol=1e-6, atol=1e-6)
    assert loaded.tokenizer.encode(TEXT) == reference.tokenizer.encode(TEXT)
    assert loaded.tokenizer.sentencepiece_model == reference.tokenizer.sentencepiece_model


def test_llama_cpp_conventions(tiny_model_dir, reference, tmp_path):
    """Tensor names, shapes, metadata and LayerNorm1p weights stored with the 1 added, as llama.cpp's
    converter writes them."""
    import gguf

    path = convert(tiny_model_dir, tmp_path / "model.gguf", to="gguf", gguf_type="f16")
    reader = gguf.GGUFReader(str(path))
    meta = {name: field.contents() for name, field in reader.fields.items() if not name.startswith("tokenizer")}
    assert meta["general.architecture"] == "nemotron"
    c = TINY_CONFIG
    expected = {"context_length": c.max_position_embeddings, "embedding_length": c.hidden_size,
                "feed_forward_length": c.intermediate_size, "block_count": c.num_layers,
                "attention.head_count": c.num_heads, "attention.head_count_kv": c.num_kv_heads,
                "attention.key_length": c.head_dim, "rope.dimension_count": c.rotary_dim}
    assert {k: meta[f"nemotron.{k}"] for k in expected} == expected
    assert meta["nemotron.attention.layer_norm_epsilon"] == pytest.approx(c.norm_eps)
    tensors = {t.name: t for t in reader.tensors}
    assert set(tensors) == set(gguf_io.tensor_names(c.num_layers).values())
    assert tensors["blk.0.attn_q.weight"].tensor_type.name == "F16"
    assert tensors["blk.0.attn_norm.weight"].tensor_type.name == "F32"
    assert list(tensors["blk.1.attn_k.weight"].shape) == [c.hidden_size, c.num_kv_heads * c.head_dim]
    stored = np.array(tensors["blk.1.ffn_norm.weight"].data)
    own = reference.model.model.layers[1].post_attention_layernorm.weight.detach().numpy()
    np.testing.assert_allclose(stored, own + 1.0, rtol=0, atol=1e-7)
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    assert reader.fields["tokenizer.ggml.model"].contents() == "llama"
    assert tokens[5] == "<extra_id_1>" and len(tokens) == c.vocab_size


@pytest.mark.parametrize("file_type, tolerance", [("f16", 0.01), ("q8_0", 0.05), ("q4_0", 0.5)])
def test_smaller_types_stay_close(tiny_model_dir, reference, ids, tmp_path, file_type, tolerance):
    path = convert(tiny_model_dir, tmp_path / f"model-{file_type}.gguf", to="gguf", gguf_type=file_type)
    expected = _logits(reference.model, ids)
    got = _logits(load_model(path, dtype="float32").model, ids)
    relative = ((got - expected).norm() / expected.norm()).item()
    assert relative < tolerance, relative
    import gguf

    bytes_per_weight = {"f16": 2, "q8_0": 34 / 32, "q4_0": 18 / 32}[file_type]
    c = TINY_CONFIG
    norms = (2 * c.num_layers + 1) * 2 * c.hidden_size
    matrices = c.num_parameters() - norms - c.vocab_size * c.hidden_size  # the output layer: q8_0 under q4_0
    weights = sum(t.n_bytes for t in gguf.GGUFReader(str(path)).tensors)
    head = c.vocab_size * c.hidden_size * (34 / 32 if file_type == "q4_0" else bytes_per_weight)
    assert weights == matrices * bytes_per_weight + head + norms * 4


def test_vocabulary_alone_rebuilds_the_sentencepiece_tokenizer(tiny_model_dir, reference, tmp_path):
    """A GGUF from llama.cpp's converter has only the `llama` vocabulary; we rebuild the model from it."""
    path = gguf_io.write_gguf(dict(load_model(tiny_model_dir).model.state_dict()), TINY_CONFIG,
                              reference.tokenizer, tmp_path / "vocab-only.gguf", "f32", embed_tokenizer=False)
    tokenizer = load_model(path).tokenizer
    assert tokenizer.sentencepiece_model != reference.tokenizer.sentencepiece_model
    for text in (TEXT, "the dog runs near the river", "Price: 3 + 4 = 7!"):
        assert tokenizer.encode(text) == reference.tokenizer.encode(text), text
        assert tokenizer.decode(tokenizer.encode(text)) == text
    assert (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id) == (2, 3, 0)


@pytest.mark.parametrize("pre", ["gpt-2", "llama-bpe", "tekken"])
def test_byte_level_bpe_tokenizer_goes_in_as_gpt2_vocabulary(tiny_model_dir, tmp_path, pre):
    import gguf

    from tests.tokenizer.test_kinds import train_byte_level_bpe

    train_byte_level_bpe(300, pattern=gguf_io.PRE_TOKENIZERS[pre]).save(  # fewer pieces than embedding rows
        str(tmp_path / "tokenizer.json"))
    tokenizer = Tokenizer.from_file(tmp_path / "tokenizer.json")
    state = dict(load_model(tiny_model_dir).model.state_dict())
    for embed in (True, False):
        path = gguf_io.write_gguf(state, TINY_CONFIG, tokenizer, tmp_path / f"bpe-{embed}.gguf", "f16",
                                  embed_tokenizer=embed)
        reader = gguf.GGUFReader(str(path))
        assert reader.fields["tokenizer.ggml.model"].contents() == "gpt2"
        assert reader.fields["tokenizer.ggml.pre"].contents() == pre
        tokens = reader.fields["tokenizer.ggml.tokens"].contents()
        assert len(tokens) == TINY_CONFIG.vocab_size and tokens[-1] == f"[PAD{TINY_CONFIG.vocab_size - 1}]"
        again = load_model(path).tokenizer
        for text in (TEXT, "  two  spaces\nand lines 12345", "naïve 日本 DON'T we'll"):
            assert again.encode(text) == tokenizer.encode(text), (embed, text)
            assert again.decode(again.encode(text)) == tokenizer.decode(tokenizer.encode(text))


def test_cli_convert_to_gguf_then_generate(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "cli.gguf"
    assert main(["convert", str(tiny_model_dir), str(out), "--to", "gguf", "--gguf-type", "q8_0"]) == 0
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["source"] == "GGUF file" and info["parameters"] == TINY_CONFIG.num_parameters()
    assert info["stored_dtype"] == "GGUF Q8_0" and info["weight_bytes"] < TINY_CONFIG.num_parameters() * 1.2
    assert main(["generate", str(out), "the cat", "-n", "4", "--greedy"]) == 0


def test_gguf_to_hf_directory(tiny_model_dir, reference, ids, tmp_path):
    path = convert(tiny_model_dir, tmp_path / "model.gguf", to="gguf", gguf_type="f32")
    back = convert(path, tmp_path / "hf")
    torch.testing.assert_close(_logits(load_model(back, dtype="float32").model, ids),
                               _logits(reference.model, ids), rtol=1e-6, atol=1e-6)


def test_unknown_files_get_accurate_errors(tmp_path, tiny_model_dir):
    garbage = tmp_path / "weights.bin"
    garbage.write_bytes(b"garbage " * 200)
    with pytest.raises(CheckpointError, match="neither a GGUF file nor a .nemo archive"):
        load_model(garbage)
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"not gguf at all")
    with pytest.raises(CheckpointError, match="named .gguf but is not a GGUF file"):
        load_model(fake)
    whole = convert(tiny_model_dir, tmp_path / "whole.gguf", to="gguf", gguf_type="f16").read_bytes()
    for size in (10, 5000, len(whole) - 10):
        (tmp_path / "cut.gguf").write_bytes(whole[:size])
        with pytest.raises(CheckpointError, match="truncated or corrupt GGUF file"):
            load_model(tmp_path / "cut.gguf")
    lone = tmp_path / "model.safetensors"
    lone.write_bytes((tiny_model_dir / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="pass the directory"):
        load_model(lone)


def test_other_architectures_and_reward_models_are_refused(tmp_path, tiny_reward_dir):
    import gguf

    writer = gguf.GGUFWriter(str(tmp_path / "llama.gguf"), "llama")
    writer.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(CheckpointError, match="architecture 'llama'; only 'nemotron'"):
        load_model(tmp_path / "llama.gguf")
    with pytest.raises(CheckpointError, match="reward model"):
        convert(tiny_reward_dir, tmp_path / "reward.gguf", to="gguf")
    assert main(["convert", str(tiny_reward_dir), str(tmp_path / "r.gguf"), "--to", "gguf"]) == 2


def test_llama_cpp_reads_our_file_with_the_same_greedy_tokens(tiny_model_dir, reference, tmp_path):
    """Runs only where llama-cpp-python is installed (it builds llama.cpp from source)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    prompt = reference.tokenizer.encode("the cat sees a bird")
    expected = _greedy(reference.model, prompt, 12)
    for file_type in ("f32", "f16"):
        path = convert(tiny_model_dir, tmp_path / f"model-{file_type}.gguf", to="gguf", gguf_type=file_type)
        llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, n_threads=2, logits_all=True, verbose=False)
        # Plain text only: after a special token llama.cpp adds SentencePiece's dummy space again and it
        # never collapses whitespace, where SentencePiece does neither (llama.cpp's own converter alike).
        plain = "The cat sees a bird. Über café? 😀"
        assert llm.tokenize(plain.encode(), add_bos=False, special=True) == reference.tokenizer.encode(plain)
        tokens = list(prompt)
        for _ in range(12):
            llm.reset()
            llm.eval(tokens)
            tokens.append(int(np.argmax(llm.scores[len(tokens) - 1])))
        assert tokens[len(prompt):] == expected, file_type


@pytest.mark.parametrize("pre", ["gpt-2", "llama-bpe", "tekken"])
def test_llama_cpp_tokenizes_our_gpt2_vocabulary_like_us(tiny_model_dir, tmp_path, pre):
    llama_cpp = pytest.importorskip("llama_cpp")
    from tests.tokenizer.test_kinds import TEXTS, train_byte_level_bpe

    train_byte_level_bpe(300, pattern=gguf_io.PRE_TOKENIZERS[pre]).save(str(tmp_path / "tokenizer.json"))
    tokenizer = Tokenizer.from_file(tmp_path / "tokenizer.json")
    path = gguf_io.write_gguf(dict(load_model(tiny_model_dir).model.state_dict()), TINY_CONFIG, tokenizer,
                              tmp_path / "bpe.gguf", "f32")
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, vocab_only=True, verbose=False)
    for text in TEXTS:
        ids = tokenizer.encode(text)
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids, text
        assert llm.detokenize(ids, special=True).decode() == tokenizer.decode(ids), text


def _greedy(model, prompt: list[int], steps: int) -> list[int]:
    tokens = list(prompt)
    for _ in range(steps):
        tokens.append(int(_logits(model, torch.tensor([tokens]))[0, -1].argmax()))
    return tokens[len(prompt):]


def test_quantize_a_gguf_file_onto_our_int8_format(tiny_model_dir, reference, ids, tmp_path):
    from nemotron.quant.checkpoint import quantize_checkpoint

    path = convert(tiny_model_dir, tmp_path / "model.gguf", to="gguf", gguf_type="q8_0")
    out = quantize_checkpoint(path, tmp_path / "int8", "int8")
    loaded = load_model(out, dtype="float32")
    assert loaded.config.quantization == "int8"
    expected = _logits(reference.model, ids)
    relative = ((_logits(loaded.model, ids) - expected).norm() / expected.norm()).item()
    assert relative < 0.05, relative
    assert loaded.tokenizer.encode(TEXT) == reference.tokenizer.encode(TEXT)


def test_saved_tokenizer_json_keeps_its_markers(tmp_path):
    from tests.tokenizer.test_kinds import train_byte_level_bpe

    train_byte_level_bpe(400).save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<|endoftext|>",
                                                                "eos_token": "<|endoftext|>"}))
    tokenizer = Tokenizer.from_dir(tmp_path)
    tokenizer.save(tmp_path / "copy")
    again = Tokenizer.from_dir(tmp_path / "copy")
    assert (again.bos_id, again.eos_id) == (tokenizer.bos_id, tokenizer.eos_id) == (0, 0)


def test_sentencepiece_style_tokenizer_json_goes_in_as_llama_vocabulary(tiny_model_dir, sp_tokenizer_file, tmp_path):
    import gguf
    import tokenizers

    from tests.tokenizer.test_tokenizer import _llama_style_json

    _llama_style_json(str(sp_tokenizer_file)).save(str(tmp_path / "tokenizer.json"))
    tokenizer = Tokenizer.from_file(tmp_path / "tokenizer.json")
    state = dict(load_model(tiny_model_dir).model.state_dict())
    path = gguf_io.write_gguf(state, TINY_CONFIG, tokenizer, tmp_path / "unigram.gguf", "f16")
    reader = gguf.GGUFReader(str(path))
    assert reader.fields["tokenizer.ggml.model"].contents() == "llama"
    types = reader.fields["tokenizer.ggml.token_type"].contents()
    assert types[1] == 2 and types[5] == 3 and types[tokenizer.token_to_id("<0x41>")] == 6  # unk, control, byte
    again = load_model(path).tokenizer
    assert again.encode(TEXT) == tokenizer.encode(TEXT) and again.decode(again.encode(TEXT)) == TEXT

    bpe = tokenizers.Tokenizer(tokenizers.models.BPE(byte_fallback=True))
    bpe.save(str(tmp_path / "bpe.json"))
    with pytest.raises(CheckpointError, match="no faithful llama.cpp vocabulary"):
        gguf_io.write_gguf(state, TINY_CONFIG, Tokenizer.from_file(tmp_path / "bpe.json"), tmp_path / "x.gguf")


def test_nemo_archive_to_gguf(tmp_path, sp_tokenizer_file):
    from nemotron.checkpoint.nemo import read_nemo
    from tests.checkpoint.test_load import write_nemo_with_real_tokenizer
    from tests.checkpoint.test_nemo import CONFIG

    model, archive = write_nemo_with_real_tokenizer(tmp_path, sp_tokenizer_file)
    # This archive's tokenizer (320 pieces) is larger than its embedding (64 rows): llama.cpp could not
    # load that, so the writer refuses; the weights alone convert exactly.
    with pytest.raises(CheckpointError, match="320 pieces but the model only 64 embedding rows"):
        convert(archive, tmp_path / "from-nemo.gguf", to="gguf", gguf_type="f32")
    path = gguf_io.write_gguf(read_nemo(archive).state_dict, CONFIG, None, tmp_path / "weights.gguf", "f32")
    loaded = load_model(path, dtype="float32")
    assert loaded.tokenizer is None
    ids = torch.randint(0, CONFIG.vocab_size, (1, 11), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(_logits(loaded.model, ids), _logits(model, ids), rtol=1e-6, atol=1e-6)


def test_q4_0_layers_load_as_int4_exactly_as_stored(tiny_model_dir, ids, tmp_path):
    """A q4_0 GGUF stays 4-bit in memory: each decoder matrix an int4 module with groups of 32 holding
    the file's nibbles and float16 scales, whose weights equal the gguf package's dequantization
    bit for bit; logits then match the dequantized model's up to fp32 summation order (fused q/k/v)."""
    from nemotron.checkpoint import hf
    from nemotron.model.nemotron import build_model
    from nemotron.quant import Int4Linear, Int8Linear

    path = convert(tiny_model_dir, tmp_path / "model-q4_0.gguf", to="gguf", gguf_type="q4_0")
    mapped = load_model(path, dtype="float32")
    assert mapped.config.quantization == "int4"
    dequantized = gguf_io.read_gguf(path)  # keep_q4_0=False: every tensor dequantized by the gguf package
    assert dequantized.config.quantization is None and dequantized.quantized_layout is None
    with torch.device("meta"):
        reference = build_model(dequantized.config)
    hf.load_state_dict_into(reference, dequantized.tensors, torch.float32, "cpu", str(path))

    c = TINY_CONFIG
    packed_bytes = 0
    for ours, theirs in zip(mapped.model.model.layers, reference.model.layers):
        attention = theirs.self_attn
        pairs = [(ours.self_attn.qkv_proj, torch.cat([attention.q_proj.weight, attention.k_proj.weight,
                                                      attention.v_proj.weight])),
                 (ours.self_attn.o_proj, attention.o_proj.weight), (ours.mlp.up_proj, theirs.mlp.up_proj.weight),
                 (ours.mlp.down_proj, theirs.mlp.down_proj.weight)]
        for module, weight in pairs:
            assert isinstance(module, Int4Linear) and module.group_size == 32
            assert module.weight_packed.dtype == torch.uint8 and module.weight_scale.dtype == torch.float16
            assert torch.equal(module.dequantize(), weight)
            packed_bytes += module.weight_packed.numel() + 2 * module.weight_scale.numel()
    linear_weights = c.num_layers * c.hidden_size * (2 * c.num_heads * c.head_dim + 2 * c.num_kv_heads * c.head_dim
                                                     + 2 * c.intermediate_size)
    assert packed_bytes == linear_weights * 18 // 32  # Q4_0's 4.5 bits per weight, nothing dequantized
    # The output layer, stored in Q8_0, goes to our int8 head (one scale per vocabulary row).
    assert mapped.config.quantized_lm_head and isinstance(mapped.model.lm_head, Int8Linear)
    reference.lm_head = Int8Linear.from_float(reference.lm_head)
    torch.testing.assert_close(_logits(mapped.model, ids), _logits(reference, ids), rtol=1e-5, atol=1e-5)


def test_only_a_quantized_output_layer_goes_to_the_int8_head():
    from types import SimpleNamespace

    g = gguf_io._gguf()
    reader = lambda output_type: SimpleNamespace(tensors=[  # noqa: E731
        SimpleNamespace(name="blk.0.attn_q.weight", tensor_type=g.GGMLQuantizationType.Q4_0),
        SimpleNamespace(name="output.weight", tensor_type=output_type)])
    for kind, quantized in (("Q8_0", True), ("Q6_K", True), ("F16", False), ("F32", False), ("BF16", False)):
        assert gguf_io._output_is_quantized(reader(getattr(g.GGMLQuantizationType, kind))) is quantized, kind


def test_q4_0_gguf_decodes_through_the_cpu_int4_kernel(tiny_model_dir, tmp_path):
    """bf16 on the CPU: the group-32 int4 layers go through torch's int4 kernel in the engine, with the
    tokens of the reference decoder over the same modules."""
    from nemotron.engine.generate import generate
    from nemotron.engine.llm import LLM
    from nemotron.engine.llm_engine import EngineConfig
    from nemotron.engine.sampling import SamplingParams
    from nemotron.quant.cpu import CpuInt4Linear

    path = convert(tiny_model_dir, tmp_path / "model-q4_0.gguf", to="gguf", gguf_type="q4_0")
    loaded = load_model(path, dtype="bfloat16")
    llm = LLM(loaded, EngineConfig(max_num_seqs=2))
    assert isinstance(loaded.model.model.layers[0].mlp.up_proj, CpuInt4Linear)
    assert loaded.model.model.layers[0].mlp.up_proj.group_size == 32
    params = SamplingParams(max_tokens=8, temperature=0, ignore_eos=True)
    prompts = [[5, 17, 33, 8, 100, 7], [250, 3, 3, 9]]
    for prompt, result in zip(prompts, llm.generate(prompts, params)):
        assert result.outputs[0].token_ids == generate(loaded.model, loaded.tokenizer, prompt, params).token_ids


def test_llama_cpp_quantized_q4_0_file_loads_4_bit_and_exact(tiny_model_dir, ids, tmp_path):
    """llama.cpp's own quantizer (Q4_0 decoder matrices, its choice of type for the rest): the decoder
    matrices load as int4 and the logits equal the fully dequantized model's. Runs where llama-cpp-python is."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from nemotron.checkpoint import hf
    from nemotron.model.nemotron import build_model

    source = convert(tiny_model_dir, tmp_path / "model-f32.gguf", to="gguf", gguf_type="f32")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0
    path = tmp_path / "model-q4_0.gguf"
    assert llama_cpp.llama_model_quantize(str(source).encode(), str(path).encode(), params) == 0
    mapped = load_model(path, dtype="float32")
    assert mapped.config.quantization == "int4"
    dequantized = gguf_io.read_gguf(path)
    with torch.device("meta"):
        reference = build_model(dequantized.config)
    hf.load_state_dict_into(reference, dequantized.tensors, torch.float32, "cpu", str(path))
    if mapped.config.quantized_lm_head:  # llama.cpp's quantizer stores the output layer quantized (Q6_K)
        from nemotron.quant import Int8Linear

        reference.lm_head = Int8Linear.from_float(reference.lm_head)
    torch.testing.assert_close(_logits(mapped.model, ids), _logits(reference, ids), rtol=1e-5, atol=1e-5)


def _rewrite(source, destination, skip=(), fields=None, drop=(), **writer_options):
    """A copy of a GGUF file through the gguf package's writer: without the tensors in `skip` and the
    metadata in `drop`, with metadata `fields` set or changed, split as `writer_options` ask."""
    import gguf

    reader = gguf.GGUFReader(str(source))
    writer = gguf.GGUFWriter(str(destination), "nemotron", **writer_options)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture" or name in (fields or {}) or name in drop:
            continue
        kind = field.types[0]
        writer.add_key_value(name, field.contents(), kind,
                             sub_type=field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None)
    for name, value in (fields or {}).items():
        kind = gguf.GGUFValueType.STRING if isinstance(value, str) else gguf.GGUFValueType.FLOAT32
        writer.add_key_value(name, value, kind)
    for tensor in reader.tensors:
        if tensor.name not in skip:
            writer.add_tensor(tensor.name, tensor.data, raw_shape=list(reversed([int(d) for d in tensor.shape])),
                              raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_a_split_gguf_loads_whole_from_its_first_shard(tiny_model_dir, reference, ids, tmp_path):
    """llama.cpp's gguf-split files (NAME-00001-of-00003.gguf): the first shard names the rest."""
    whole = convert(tiny_model_dir, tmp_path / "whole.gguf", to="gguf", gguf_type="f32")
    (tmp_path / "split").mkdir()
    _rewrite(whole, tmp_path / "split" / "model.gguf", split_max_tensors=8)
    shards = sorted((tmp_path / "split").iterdir())
    assert [s.name for s in shards][0] == "model-00001-of-00003.gguf" and len(shards) == 3
    loaded = load_model(shards[0], dtype="float32")
    torch.testing.assert_close(_logits(loaded.model, ids), _logits(reference.model, ids), rtol=1e-6, atol=1e-6)
    with pytest.raises(CheckpointError, match="is shard 2 of 3 of a split GGUF; pass the first shard"):
        load_model(shards[1])
    shards[2].unlink()
    with pytest.raises(CheckpointError, match="model-00003-of-00003.gguf not found beside it"):
        load_model(shards[0])


def test_an_incomplete_gguf_is_refused_before_anything_is_written(tiny_model_dir, tmp_path):
    whole = convert(tiny_model_dir, tmp_path / "whole.gguf", to="gguf", gguf_type="f16")
    _rewrite(whole, tmp_path / "headless.gguf", skip=("output.weight",))
    with pytest.raises(CheckpointError, match="lacks tensor\\(s\\) output.weight"):
        convert(tmp_path / "headless.gguf", tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_rope_scaling_in_a_gguf_is_refused(tiny_model_dir, tmp_path):
    """llama.cpp's converter writes rope.scaling.* from a config.json; llama.cpp applies it, we do not."""
    whole = convert(tiny_model_dir, tmp_path / "whole.gguf", to="gguf", gguf_type="f16")
    _rewrite(whole, tmp_path / "scaled.gguf", fields={"nemotron.rope.scaling.type": "linear",
                                                     "nemotron.rope.scaling.factor": 4.0})
    with pytest.raises(CheckpointError, match="asks for RoPE scaling \\(linear, factor 4\\)"):
        load_model(tmp_path / "scaled.gguf")


def test_a_vocabulary_we_cannot_read_gives_way_to_a_tokenizer_given(tiny_model_dir, tmp_path, capsys):
    import gguf

    bpe = tmp_path / "bpe"
    bpe.mkdir()
    from tests.tokenizer.test_kinds import train_byte_level_bpe

    train_byte_level_bpe(vocab_size=TINY_CONFIG.vocab_size).save(str(bpe / "tokenizer.json"))
    for name in ("config.json", "model.safetensors"):
        (bpe / name).write_bytes((tiny_model_dir / name).read_bytes())
    whole = convert(bpe, tmp_path / "whole.gguf", to="gguf", gguf_type="f32")
    odd = tmp_path / "odd.gguf"
    _rewrite(whole, odd, skip=(), fields={"tokenizer.ggml.pre": "qwen2"})
    reader_fields = gguf.GGUFReader(str(odd)).fields
    assert reader_fields["tokenizer.ggml.pre"].contents() == "qwen2"
    # the embedded tokenizer.json would rescue it: take it out, as llama.cpp's converter never writes one
    _rewrite(odd, tmp_path / "bare.gguf", drop=(gguf_io.HF_JSON_KEY,))
    loaded = load_model(tmp_path / "bare.gguf", dtype="float32")
    assert loaded.tokenizer is None and "pre-tokenizer 'qwen2' is not supported" in loaded.tokenizer_error
    with pytest.raises(Exception, match="pre-tokenizer 'qwen2' is not supported"):
        loaded.require_tokenizer("--tokenizer FILE")
    assert main(["generate", str(tmp_path / "bare.gguf"), "--tokenizer", str(bpe / "tokenizer.json"), "hello",
                 "-n", "2", "--greedy"]) == 0
    with pytest.raises(CheckpointError, match="pre-tokenizer 'qwen2' is not supported"):  # not converted without it
        convert(tmp_path / "bare.gguf", tmp_path / "hf")


def test_gguf_to_hf_config_says_the_dtype_it_stores(tiny_model_dir, tmp_path):
    from safetensors import safe_open

    path = convert(tiny_model_dir, tmp_path / "model.gguf", to="gguf", gguf_type="f16")
    back = convert(path, tmp_path / "hf")
    assert json.loads((back / "config.json").read_text())["torch_dtype"] == "float16"
    with safe_open(back / "model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}


def test_chat_template_end_of_turn_and_newlines_for_llama_cpp(tiny_model_dir, sp_tokenizer_file, tmp_path):
    """llama.cpp renders `tokenizer.chat_template` (Jinja) and stops at an end-of-turn token; a
    one-character user-defined piece ("\\n") goes in as NORMAL (llama.cpp puts a dummy space after a
    user-defined piece, SentencePiece does not)."""
    import gguf
    import jinja2

    from nemotron.assets import DEMO_MODEL_DIR
    from nemotron.tokenizer import render_chat
    from nemotron.tokenizer.spm_proto import PieceType, read_pieces

    path = convert(tiny_model_dir, tmp_path / "model.gguf", to="gguf", gguf_type="f16")
    fields = gguf.GGUFReader(str(path)).fields
    template = jinja2.Environment().from_string(fields["tokenizer.chat_template"].contents())
    for conversation in ([{"role": "user", "content": "Hi"}],
                         [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                          {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "And?"}]):
        assert template.render(messages=conversation, add_generation_prompt=True) == str(render_chat(conversation))
    tokenizer = Tokenizer.from_dir(tiny_model_dir)
    assert fields["tokenizer.ggml.eot_token_id"].contents() == tokenizer.token_to_id("<extra_id_1>")
    demo = convert(DEMO_MODEL_DIR, tmp_path / "demo.gguf", to="gguf", gguf_type="f16")  # "\n" is user-defined there
    pieces = read_pieces(Tokenizer.from_dir(DEMO_MODEL_DIR).sentencepiece_model)
    types = gguf.GGUFReader(str(demo)).fields["tokenizer.ggml.token_type"].contents()
    for k, piece in enumerate(pieces):
        single = piece.type == PieceType.USER_DEFINED and len(piece.text) == 1
        assert types[k] == (int(PieceType.NORMAL) if single else int(piece.type)), piece
    assert any(p.type == PieceType.USER_DEFINED and len(p.text) == 1 for p in pieces)  # the case is exercised
    # A chat template of the checkpoint's own goes in instead; its turns end at <extra_id_1> only if it says so.
    own = tmp_path / "own"
    own.mkdir()
    for item in tiny_model_dir.iterdir():
        (own / item.name).write_bytes(item.read_bytes())
    for k, (template, turn_end) in enumerate((("{{ messages[0]['content'] }}", False),
                                               ("{{ m }}<extra_id_1>Assistant\n", True))):
        (own / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
        fields = gguf.GGUFReader(str(convert(own, tmp_path / f"own{k}.gguf", to="gguf"))).fields
        assert fields["tokenizer.chat_template"].contents() == template
        assert ("tokenizer.ggml.eot_token_id" in fields) == turn_end
    # A vocabulary without the Nemotron markers gets no Nemotron template (it would spell them as text).
    bpe = tmp_path / "bpe"
    bpe.mkdir()
    from tests.tokenizer.test_kinds import train_byte_level_bpe

    train_byte_level_bpe(vocab_size=TINY_CONFIG.vocab_size, specials=("<|endoftext|>",)).save(
        str(bpe / "tokenizer.json"))
    for name in ("config.json", "model.safetensors"):
        (bpe / name).write_bytes((tiny_model_dir / name).read_bytes())
    fields = gguf.GGUFReader(str(convert(bpe, tmp_path / "bpe.gguf", to="gguf"))).fields
    assert "tokenizer.chat_template" not in fields and "tokenizer.ggml.eot_token_id" not in fields


def test_converting_into_a_directory_names_the_problem_and_leaves_nothing(tiny_model_dir, tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(CheckpointError, match="out is a directory; a GGUF is one file"):
        convert(tiny_model_dir, tmp_path / "out", to="gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("file_type", ["q8_0", "q4_0"])
def test_tensors_are_dequantized_and_quantized_in_bands_exactly(tiny_model_dir, tmp_path, monkeypatch, file_type):
    """Bands of rows bound the temporaries (a 256k-vocabulary embedding at once peaked at twice its
    float32 size); the numbers are the whole tensor's."""
    import gguf

    from nemotron.quant import linear

    path = convert(tiny_model_dir, tmp_path / "model.gguf", to="gguf", gguf_type=file_type)
    reader = gguf.GGUFReader(str(path))
    whole = {t.name: np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32) for t in reader.tensors}
    monkeypatch.setattr(gguf_io, "DEQUANTIZE_ROWS_ELEMENTS", 100)  # a band of one or two rows
    monkeypatch.setattr(linear, "QUANTIZE_BAND_ELEMENTS", 100)
    for tensor in reader.tensors:
        banded = gguf_io._dequantized(tensor, torch.float32).numpy().reshape(whole[tensor.name].shape)
        assert np.array_equal(banded, whole[tensor.name]), tensor.name
    output = next(t for t in reader.tensors if t.name == "output.weight")
    weight = torch.from_numpy(whole["output.weight"].reshape(TINY_CONFIG.vocab_size, -1))
    scale = (weight.abs().amax(dim=1) / 127).clamp_min(linear._FP16_TINY)
    head = gguf_io._int8_head(output)
    assert torch.equal(head["weight_scale"], scale)
    assert torch.equal(head["weight"], torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8))


def test_a_q4_0_file_is_planned_as_it_will_be_held(sp_tokenizer_file, tmp_path, monkeypatch):
    """The memory check before loading counts int4 layers and the int8 head, not their dequantized
    size (a 9 GB Q4_0 Nemotron-4-15B was refused as 31 GB of bfloat16); layers too narrow for the
    planner's groups of 128 are planned dequantized."""
    import dataclasses

    from nemotron.checkpoint import preflight
    from nemotron.model.nemotron import build_model, init_random_weights
    from tests.conftest import write_model_dir

    planned = []
    monkeypatch.setattr(preflight, "check_fits", lambda config, *args, **kwargs: planned.append(config))
    wide = dataclasses.replace(TINY_CONFIG, hidden_size=128, intermediate_size=256, head_dim=32)
    for config, quantization in ((wide, "int4"), (TINY_CONFIG, None)):
        model = build_model(config)
        init_random_weights(model, seed=0)
        directory = write_model_dir(model, config, tmp_path / f"h{config.hidden_size}", sp_tokenizer_file)
        path = convert(directory, tmp_path / f"h{config.hidden_size}.gguf", to="gguf", gguf_type="q4_0")
        assert load_model(path, dtype="float32").config.quantization == "int4"
        assert (planned[-1].quantization, planned[-1].quantized_lm_head) == (quantization, quantization is not None)
        assert load_config(path).quantization == quantization  # what `nemotron memory` plans with


def test_a_lora_on_a_4_bit_gguf_is_refused_in_words(tiny_model_dir, tmp_path):
    from nemotron.checkpoint.peft import merge_adapter_into, save_adapter
    from nemotron.model.lora import LoraConfig, apply_lora

    model = load_model(tiny_model_dir, dtype="float32")
    apply_lora(model.model, LoraConfig(r=2, alpha=4.0, target_modules=("q_proj", "up_proj")))
    save_adapter(model.model, tmp_path / "adapter")
    path = convert(tiny_model_dir, tmp_path / "model.gguf", to="gguf", gguf_type="q4_0")
    with pytest.raises(CheckpointError, match="holds int4 layers; a LoRA adapter merges into float weights"):
        merge_adapter_into(load_model(path, dtype="float32"), tmp_path / "adapter")
    merged = merge_adapter_into(load_model(convert(tiny_model_dir, tmp_path / "m8.gguf", to="gguf", gguf_type="q8_0"),
                                           dtype="float32"), tmp_path / "adapter")
    assert merged.config.quantization is None
