"""Nemotron-H `.nemo` checkpoints in NeMo / megatron-core MambaModel names: built here from a random
transformers NemotronHForCausalLM, loaded back exactly (every tensor, and the logits)."""
from __future__ import annotations

import pytest
import torch
import yaml

from nemotron.checkpoint import megatron_hybrid
from nemotron.checkpoint.load import load_config, load_model
from nemotron.checkpoint.nemo import read_nemo
from nemotron.errors import CheckpointError
from nemotron.model.nemotron_h import NemotronHForCausalLM
from tests.checkpoint.test_nemo import tar_dir
from tests.model.test_nemotron_h import SHAPES, make_hf_model, ours_from_hf

pytest.importorskip("transformers")


def nemo_yaml(config, **extra) -> dict:
    """model_config.yaml as NeMo writes it for a hybrid Mamba model."""
    raw = {
        "num_layers": config.num_layers, "hybrid_override_pattern": config.pattern,
        "hidden_size": config.hidden_size, "ffn_hidden_size": config.intermediate_size,
        "num_attention_heads": config.num_heads, "num_query_groups": config.num_kv_heads,
        "kv_channels": config.head_dim, "mamba_num_heads": config.mamba_num_heads,
        "mamba_head_dim": config.mamba_head_dim, "mamba_state_dim": config.ssm_state_size,
        "mamba_num_groups": config.n_groups, "layernorm_epsilon": config.norm_eps, "seq_length": 256,
        "position_embedding_type": "none", "normalization": "RMSNorm", "add_bias_linear": False,
        "precision": "32", "make_vocab_size_divisible_by": 128,
    }
    raw.update(extra)
    return raw


def write_nemo(tmp_path, shape, seed: int, weights_fn=None, **yaml_extra):
    hf_model = make_hf_model(shape, seed=seed)
    ours = ours_from_hf(hf_model)
    state = {k: v.detach().clone() for k, v in hf_model.state_dict().items()}
    weights = megatron_hybrid.hf_to_megatron(state, ours.config)
    if weights_fn is not None:
        weights = weights_fn(weights)
    root = tmp_path / "src"
    root.mkdir()
    (root / "model_config.yaml").write_text(yaml.safe_dump(nemo_yaml(ours.config, **yaml_extra)))
    return root, weights, hf_model, state


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.name)
def test_nemo_archive_loads_exactly(tmp_path, shape):
    root, weights, hf_model, state = write_nemo(tmp_path, shape, seed=20)
    assert "model.decoder.layers.0.mixer.in_proj.layer_norm_weight" in weights  # the fused-norm spelling
    assert any(name.endswith("self_attention.linear_qkv.weight") for name in weights)
    torch.save(weights, root / "model_weights.ckpt")
    archive = tar_dir(root, tmp_path / "model.nemo")
    checkpoint = read_nemo(archive)
    assert checkpoint.tokenizer_model is None
    assert checkpoint.state_dict.keys() == state.keys()
    for name, tensor in state.items():
        assert torch.equal(checkpoint.state_dict[name], tensor), name
    assert load_config(archive).layer_types == checkpoint.config.layer_types
    from nemotron.cli.info import describe, format_info

    info = describe(str(archive))
    assert info["architecture"] == "hybrid causal LM" and "prefix caching is off" in format_info(info)
    loaded = load_model(archive, dtype="float32")
    assert isinstance(loaded.model, NemotronHForCausalLM)
    ids = torch.randint(0, shape.vocab, (1, 17), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (hf_model(ids).logits - loaded.model(ids)).abs().max().item() <= 1e-4


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_separate_norms_and_a_torch_dist_directory(tmp_path):
    """The norms as separate modules (no Transformer Engine) and the weights as a torch_dist
    distributed checkpoint (NeMo's default since 2024), one entry per layer."""
    import json

    from torch.distributed.checkpoint import FileSystemWriter, save

    def separate_norms(weights):
        renamed = {}
        for name, tensor in weights.items():
            for fused, plain in (("mixer.in_proj.layer_norm_weight", "norm.weight"),
                                 ("self_attention.linear_qkv.layer_norm_weight", "input_layernorm.weight"),
                                 ("mlp.linear_fc1.layer_norm_weight", "pre_mlp_layernorm.weight")):
                name = name.replace(fused, plain)
            renamed[name] = tensor
        return renamed

    root, weights, hf_model, state = write_nemo(tmp_path, SHAPES[0], seed=21, weights_fn=separate_norms)
    directory = root / "model_weights"
    directory.mkdir()
    save({k: v.contiguous() for k, v in weights.items()}, storage_writer=FileSystemWriter(str(directory)))
    (directory / "metadata.json").write_text(json.dumps({"sharded_backend": "torch_dist"}))
    checkpoint = read_nemo(root, trust_pickle=True)
    for name, tensor in state.items():
        assert torch.equal(checkpoint.state_dict[name], tensor), name


def test_a_pattern_that_does_not_fit_the_weights_is_refused(tmp_path):
    root, weights, _, _ = write_nemo(tmp_path, SHAPES[0], seed=22, hybrid_override_pattern="M-M*M",
                                     num_layers=5)
    torch.save(weights, root / "model_weights.ckpt")
    with pytest.raises(CheckpointError, match="does not fit|has shape|no tensor"):
        read_nemo(root)


def test_an_unknown_tensor_is_named(tmp_path):
    root, weights, _, _ = write_nemo(tmp_path, SHAPES[0], seed=23)
    weights["model.decoder.layers.0.mixer.mystery.weight"] = torch.zeros(2)
    torch.save(weights, root / "model_weights.ckpt")
    with pytest.raises(CheckpointError, match="mixer.mystery.weight"):
        read_nemo(root)


def test_a_byte_level_tokenizer_json_inside_the_nemo(tmp_path):
    """tokenizer.model naming a tokenizer.json (a Hugging Face tokenizer) in the archive; the loaded
    model then generates through the engine like any other."""
    from nemotron.engine.llm import LLM
    from nemotron.engine.sampling import SamplingParams
    from tests.engine.test_hybrid_engine import HYBRID_SHAPES
    from tests.tokenizer.test_kinds import LLAMA3_PATTERN, train_byte_level_bpe

    shape = HYBRID_SHAPES[1]  # a vocabulary the tokenizer fills exactly
    tokenizer = train_byte_level_bpe(vocab_size=shape.vocab, pattern=LLAMA3_PATTERN, specials=("<unk>", "<s>", "</s>"))
    root, weights, _, _ = write_nemo(tmp_path, shape, seed=24,
                                     tokenizer={"library": "huggingface", "model": "nemo:a1b2_tokenizer.json"})
    assert tokenizer.get_vocab_size() == shape.vocab
    tokenizer.save(str(root / "a1b2_tokenizer.json"))
    torch.save(weights, root / "model_weights.ckpt")
    loaded = load_model(tar_dir(root, tmp_path / "model.nemo"), dtype="float32")
    assert loaded.tokenizer.encode("hello world") == tokenizer.encode("hello world").ids
    with LLM(loaded) as llm:
        result = llm.generate("hello world", SamplingParams(max_new_tokens=6, greedy=True, ignore_eos=True))[0]
    assert len(result.token_ids) == 6 and result.text == loaded.tokenizer.decode(result.token_ids)


def test_convert_a_hybrid_nemo_to_what_transformers_loads(tmp_path):
    from transformers import NemotronHForCausalLM as HFModel

    from nemotron.checkpoint.load import convert

    root, weights, hf_model, _ = write_nemo(tmp_path, SHAPES[2], seed=25)
    torch.save(weights, root / "model_weights.ckpt")
    out = convert(tar_dir(root, tmp_path / "model.nemo"), tmp_path / "hf")
    reloaded = HFModel.from_pretrained(out, dtype=torch.float32).eval()
    ids = torch.randint(0, SHAPES[2].vocab, (1, 13), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(reloaded(ids).logits, hf_model(ids).logits, atol=1e-5)
