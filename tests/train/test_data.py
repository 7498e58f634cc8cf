import json

import pytest
import torch

from nemotron.tokenizer import CHAT_STOP
from nemotron.train.data import (
    IGNORE, BatchConfig, ChatDataset, DataError, TokenStream, encode_chat, read_documents, tokenize_documents,
)

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 3 plus 4?"},
    {"role": "assistant", "content": "3 plus 4 is 7."},
    {"role": "user", "content": "Thank you!"},
    {"role": "assistant", "content": "You are welcome!"},
]


def test_sft_mask_covers_exactly_the_assistant_replies_and_their_stop(tokenizer):
    ids, mask = encode_chat(CONVERSATION, tokenizer)
    trained = tokenizer.decode([i for i, m in zip(ids, mask) if m])
    untrained = tokenizer.decode([i for i, m in zip(ids, mask) if not m])
    assert trained == f"3 plus 4 is 7.\n{CHAT_STOP}You are welcome!\n{CHAT_STOP}"
    assert untrained == (f"<extra_id_0>System\nBe brief.\n{CHAT_STOP}User\nWhat is 3 plus 4?\n{CHAT_STOP}Assistant\n"
                         f"User\nThank you!\n{CHAT_STOP}Assistant\n")
    # the ids are those of encoding the whole conversation at once, as inference does
    assert tokenizer.decode(ids).endswith(f"You are welcome!\n{CHAT_STOP}")


def test_sft_batch_is_right_padded_and_targets_only_assistant_tokens(tokenizer):
    short = [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello!"}]
    examples = [encode_chat(CONVERSATION, tokenizer), encode_chat(short, tokenizer)]
    data = ChatDataset(examples, pad_id=tokenizer.pad_id, config=BatchConfig(batch_size=2, seq_len=512, seed=0))
    batch = data.batch(0)
    rows = {len(ids): (ids, mask) for ids, mask in examples}
    for r in range(2):
        length = int((batch.inputs[r] != tokenizer.pad_id).sum()) + 1
        ids, mask = rows[length]
        assert batch.inputs[r, :length - 1].tolist() == ids[:-1]
        assert (batch.inputs[r, length - 1:] == tokenizer.pad_id).all()
        expected = [t if m else IGNORE for t, m in zip(ids[1:], mask[1:])]
        assert batch.targets[r, :length - 1].tolist() == expected
        assert (batch.targets[r, length - 1:] == IGNORE).all()


def test_sft_batches_are_a_function_of_the_step(tokenizer, chats):
    examples = [encode_chat(c["messages"], tokenizer) for c in chats[:10]]
    config = BatchConfig(batch_size=4, seq_len=128, seed=3)
    a, b = ChatDataset(examples, 0, config), ChatDataset(examples, 0, config)
    for step in (5, 0, 2, 7):  # any order, any instance
        assert torch.equal(a.batch(step).inputs, b.batch(step).inputs)
    seen = torch.cat([a.batch(s).inputs[:, 0] for s in range(3)])  # 12 picks cover an epoch of 10
    assert seen.numel() == 12


def test_sft_conversation_must_end_with_the_assistant(tokenizer):
    with pytest.raises(DataError):
        encode_chat(CONVERSATION[:2], tokenizer)


def test_token_stream_joins_documents_with_eos_and_windows_are_shifted(tokenizer):
    stream = tokenize_documents(["One day.", "The end."], tokenizer)
    assert stream.tolist() == tokenizer.encode("One day.") + [tokenizer.eos_id] + tokenizer.encode("The end.") + [
        tokenizer.eos_id]
    data = TokenStream(torch.arange(1000), BatchConfig(batch_size=3, seq_len=16, seed=1))
    batch = data.batch(4)
    assert batch.inputs.shape == (3, 16)
    assert torch.equal(batch.targets, batch.inputs + 1)
    assert torch.equal(data.batch(4).inputs, batch.inputs) and not torch.equal(data.batch(5).inputs, batch.inputs)


def test_read_documents_from_jsonl_and_plain_text(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "First doc.\nTwo lines."}) + "\n\n")
    (tmp_path / "b.txt").write_text("Second doc.\n\nThird doc.\n")
    assert list(read_documents([tmp_path / "a.jsonl", tmp_path / "b.txt"])) == [
        "First doc.\nTwo lines.", "Second doc.", "Third doc."]
    (tmp_path / "bad.jsonl").write_text('{"txt": 1}\n')
    with pytest.raises(DataError, match="bad.jsonl:1"):
        list(read_documents([tmp_path / "bad.jsonl"]))
