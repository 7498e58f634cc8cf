import pytest

from nemotron.errors import ConfigError
from nemotron.tokenizer import Tokenizer
from nemotron.train.tokenizer_training import TokenizerTrainingConfig, train_tokenizer


def test_trained_tokenizer_has_the_nemotron_special_ids(tokenizer):
    assert (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id) == (0, 2, 3)
    assert [tokenizer.id_to_piece(i) for i in range(4)] == ["<pad>", "<unk>", "<s>", "</s>"]
    for k in range(3):
        piece = f"<extra_id_{k}>"
        assert tokenizer.encode(f"Hi{piece}there").count(tokenizer.token_to_id(piece)) == 1


def test_chat_text_round_trips_with_newlines_digits_and_unseen_characters(tokenizer):
    text = "<extra_id_0>System\n\n<extra_id_1>User\nWhat is 12 + 30?  Ünïcode ✓\n<extra_id_1>Assistant\n"
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert tokenizer.token_strings(tokenizer.encode("1234"))[-4:] == ["1", "2", "3", "4"]  # digits split
    assert "<0xE2>" in tokenizer.token_strings(tokenizer.encode("✓"))  # byte fallback, never <unk>


def test_writes_a_loadable_tokenizer_model(tmp_path, documents):
    trained = train_tokenizer(documents[:50], TokenizerTrainingConfig(vocab_size=600), tmp_path)
    loaded = Tokenizer.from_dir(tmp_path)
    assert loaded.vocab_size == trained.vocab_size <= 600
    assert loaded.encode(documents[0]) == trained.encode(documents[0])


def test_too_small_a_vocabulary_is_refused():
    with pytest.raises(ConfigError, match="vocab_size"):
        TokenizerTrainingConfig(vocab_size=100)
