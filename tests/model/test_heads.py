"""Head and depth transforms: a reward model from a language model, identity layers on top."""
from __future__ import annotations

import torch

from nemotron.model.config import ModelConfig
from nemotron.model.heads import add_identity_layers, reward_model_from
from nemotron.model.nemotron import NemotronForCausalLM, init_random_weights


def _model() -> NemotronForCausalLM:
    config = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                         num_kv_heads=2, head_dim=8, max_position_embeddings=32, torch_dtype="float32")
    model = NemotronForCausalLM(config)
    init_random_weights(model, seed=1, std=0.1)
    return model


def test_identity_layers_change_nothing_until_trained():
    model = _model()
    ids = torch.randint(0, 64, (2, 11))
    with torch.no_grad():
        before = model(ids)
        grown = add_identity_layers(model, 3)
        after = grown(ids)
    assert grown.config.num_layers == 5 and grown.model.config.num_layers == 5 and len(grown.model.layers) == 5
    assert [layer.self_attn.layer_idx for layer in grown.model.layers] == [0, 1, 2, 3, 4]
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    # a copy, not the same module: training a new layer leaves the original last layer alone
    assert grown.model.layers[2].mlp.up_proj.weight is not grown.model.layers[1].mlp.up_proj.weight


def test_identity_layers_on_a_reward_model_keep_its_scores_and_learn():
    reward = reward_model_from(_model())
    torch.nn.init.normal_(reward.rm_head.weight, std=0.1)
    ids = torch.randint(0, 64, (2, 9))
    lengths = torch.tensor([9, 5])
    with torch.no_grad():
        before = reward(ids, lengths=lengths)
    grown = add_identity_layers(reward, 1)
    after = grown(ids, lengths=lengths)
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    after.sum().backward()
    assert grown.model.layers[-1].self_attn.o_proj.weight.grad.abs().sum() > 0
    assert grown.model.layers[-1].mlp.down_proj.weight.grad.abs().sum() > 0
    assert add_identity_layers(grown, 0) is grown
