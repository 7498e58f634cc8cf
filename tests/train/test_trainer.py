import torch

from nemotron.checkpoint.load import load_model
from nemotron.train.checkpoint import latest_checkpoint
from nemotron.train.data import BatchConfig, ChatDataset, TokenStream, encode_chat, tokenize_documents
from nemotron.train.schedule import ScheduleConfig
from nemotron.train.trainer import OptimConfig, Trainer, TrainConfig, optimizer_for
from tests.train.helpers import tiny_model


def run(tmp_path, tokenizer, stream, steps, stop_at=None, name="run", resume=True):
    model = tiny_model(tokenizer.vocab_size)
    trainer = Trainer(model, tokenizer, stream, ScheduleConfig(3e-3, steps, warmup_steps=2), OptimConfig(),
                      TrainConfig(str(tmp_path / name), log_every=2, checkpoint_every=3, resume=resume,
                                  stop_at_step=stop_at, device="cpu"), log=lambda _: None)
    return trainer.run(), model


def test_a_few_steps_reduce_the_loss(tmp_path, tokenizer, documents):
    stream = TokenStream(tokenize_documents(documents[:100], tokenizer), BatchConfig(8, 32, seed=0))
    model = tiny_model(tokenizer.vocab_size)
    trainer = Trainer(model, tokenizer, stream, ScheduleConfig(1e-2, 30, warmup_steps=3), OptimConfig(),
                      TrainConfig(str(tmp_path), log_every=5, checkpoint_every=0, device="cpu"), log=lambda _: None)
    first = trainer.train_step()[0]
    for _ in range(29):
        last = trainer.train_step()[0]
    assert last < first - 1.0


def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, tokenizer, documents):
    stream = TokenStream(tokenize_documents(documents[:50], tokenizer), BatchConfig(4, 16, seed=1))
    _, straight = run(tmp_path, tokenizer, stream, 8, name="straight")
    run(tmp_path, tokenizer, stream, 8, stop_at=5, name="split")  # "interrupted" after step 5
    assert latest_checkpoint(tmp_path / "split").name == "checkpoint-0000005"
    result, resumed = run(tmp_path, tokenizer, stream, 8, name="split")  # a fresh process picks it up
    assert result.step == 8
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name


def test_checkpoints_are_loadable_model_directories_and_old_ones_are_pruned(tmp_path, tokenizer, documents):
    stream = TokenStream(tokenize_documents(documents[:50], tokenizer), BatchConfig(4, 16, seed=1))
    _, model = run(tmp_path, tokenizer, stream, 10)
    names = sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*"))
    assert names == ["checkpoint-0000009", "checkpoint-0000010"]  # keep_checkpoints=2
    loaded = load_model(tmp_path / "run" / names[-1])
    assert loaded.tokenizer is not None and loaded.tokenizer.vocab_size == tokenizer.vocab_size
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor)
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count("\n") >= 5


def test_sft_loss_ignores_untrained_positions(tmp_path, tokenizer, chats):
    examples = [encode_chat(c["messages"], tokenizer) for c in chats[:20]]
    data = ChatDataset(examples, tokenizer.pad_id, BatchConfig(4, 128, seed=0))
    model = tiny_model(tokenizer.vocab_size)
    trainer = Trainer(model, tokenizer, data, ScheduleConfig(1e-3, 5), OptimConfig(),
                      TrainConfig(str(tmp_path), device="cpu"), log=lambda _: None)
    batch = data.batch(0)
    _, tokens = trainer.train_step()
    assert tokens == batch.num_target_tokens
    assert 0 < tokens < int((batch.inputs != tokenizer.pad_id).sum())


def test_weight_decay_spares_norms_and_embeddings(tokenizer):
    model = tiny_model(tokenizer.vocab_size)
    decay, no_decay = optimizer_for(model, OptimConfig(), 1e-3).param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in no_decay["params"]} >= {"model.embed_tokens.weight", "model.norm.weight",
                                                          "model.norm.bias"}
    assert all("norm" not in names[id(p)] and "embed" not in names[id(p)] for p in decay["params"])
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.1
