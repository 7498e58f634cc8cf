"""Tokenizer tests on tiny tokenizers trained here: SentencePiece models (the <extra_id_N> pieces
as user-defined or as control symbols, with and without a dummy prefix) and a Llama-style
tokenizer.json built from one of them with the `tokenizers` library."""
from __future__ import annotations

import json
import random

import pytest
import sentencepiece
import tokenizers
from tokenizers import decoders, models, pre_tokenizers

from nemotron.errors import TokenizerError
from nemotron.tokenizer import Tokenizer

EXTRA_IDS = ["<extra_id_0>", "<extra_id_1>", "<extra_id_2>"]
PAD, UNK, BOS, EOS = 0, 1, 2, 3
CHAT = "<extra_id_0>System\n\n<extra_id_1>User\nWrite a poem.\n<extra_id_1>Assistant\n"
TEXTS = [
    "hello world",
    "The quick brown fox jumps over the lazy dog.\nNew line\n\nand\ttab  two spaces ",
    " leading space",
    "Café naïve résumé — “quoted” ß",
    "日本語のテキスト and 中文",
    "emoji 🙂🚀 snowman ☃ flag 🇫🇷",
    CHAT,
    "text around <extra_id_2> a reward token",
]
SP_VARIANTS = {
    "user": dict(user_defined_symbols=EXTRA_IDS),
    "control": dict(control_symbols=EXTRA_IDS),
    "no_prefix": dict(user_defined_symbols=EXTRA_IDS, add_dummy_prefix=False),
}


def _corpus() -> str:
    rng = random.Random(0)
    words = ("the quick brown fox jumps over lazy dog hello world system user assistant model token "
             "language data python code write poem answer question café naïve").split()
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) for _ in range(1500)]
    return "\n".join(lines + ["Résumé — “quotes” 日本語 中文 ß\tTab  two  spaces."] * 3)


@pytest.fixture(scope="session")
def tokenizer_files(tmp_path_factory) -> dict[str, str]:
    """name -> tokenizer file; SentencePiece trains each in well under a second."""
    root = tmp_path_factory.mktemp("tokenizers")
    corpus = root / "corpus.txt"
    corpus.write_text(_corpus(), encoding="utf-8")
    files = {}
    for name, extra in SP_VARIANTS.items():
        sentencepiece.SentencePieceTrainer.train(
            input=str(corpus), model_prefix=str(root / name), vocab_size=320, model_type="unigram",
            pad_id=PAD, unk_id=UNK, bos_id=BOS, eos_id=EOS, byte_fallback=True, character_coverage=1.0,
            normalization_rule_name="identity", remove_extra_whitespaces=False, minloglevel=2, **extra)
        files[name] = str(root / f"{name}.model")
    hf_dir = root / "hf"
    hf_dir.mkdir()
    _llama_style_json(files["user"]).save(str(hf_dir / "tokenizer.json"))
    files["hf"] = str(hf_dir / "tokenizer.json")
    return files


def _llama_style_json(sp_model: str) -> tokenizers.Tokenizer:
    """What transformers' LlamaConverter writes for a SentencePiece model, built directly."""
    sp = sentencepiece.SentencePieceProcessor(model_file=sp_model)
    vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    tok = tokenizers.Tokenizer(models.Unigram(vocab, unk_id=UNK, byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    specials = [sp.id_to_piece(i) for i in (PAD, BOS, EOS)] + EXTRA_IDS
    tok.add_special_tokens([tokenizers.AddedToken(p, normalized=False, special=True) for p in specials])
    return tok


@pytest.fixture(scope="session", params=[*SP_VARIANTS, "hf"])
def tok(request, tokenizer_files) -> Tokenizer:
    return Tokenizer.from_file(tokenizer_files[request.param])


def _random_ids(tok: Tokenizer, rng: random.Random, n: int) -> list[int]:
    """Ids biased towards byte pieces (ids 7..262), where text assembly is hardest."""
    return [rng.randrange(7, 263) if rng.random() < 0.5 else rng.randrange(tok.vocab_size) for _ in range(n)]


def _is_byte(tok: Tokenizer, token_id: int) -> bool:
    piece = tok.id_to_piece(token_id)
    return len(piece) == 6 and piece.startswith("<0x")


# ----------------------------------------------------------------------------- vocabulary
def test_vocabulary_and_markers(tok):
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (PAD, BOS, EOS)
    assert tok.vocab_size == 320
    assert tok.token_to_id("<extra_id_1>") == 5
    assert tok.id_to_piece(5) == "<extra_id_1>"
    assert tok.token_to_id("<no such piece>") is None
    assert tok.token_strings(tok.encode("🙂"))[-4:] == ["<0xF0>", "<0x9F>", "<0x99>", "<0x82>"]


def test_ids_outside_the_vocabulary_are_an_error(tok):
    with pytest.raises(TokenizerError, match="outside the vocabulary"):
        tok.decode([tok.vocab_size])


# ----------------------------------------------------------------------------- encode / decode
@pytest.mark.parametrize("text", TEXTS)
def test_round_trip(tok, text):
    if text.startswith(" ") and tok._hf is not None:
        pytest.skip("a Llama-style tokenizer.json drops a leading space itself (its Strip decoder)")
    assert tok.decode(tok.encode(text)) == text


def test_special_tokens_in_text_become_single_ids(tok):
    ids = tok.encode(CHAT)
    assert ids.count(tok.token_to_id("<extra_id_0>")) == 1
    assert ids.count(tok.token_to_id("<extra_id_1>")) == 2
    assert [i for i in tok.encode("<extra_id_2>") if tok.id_to_piece(i) != "▁"] == [6]
    assert [i for i in tok.encode("a</s>b<s>") if i in (BOS, EOS)] == [EOS, BOS]
    assert not {"<", "<0x3C>", ">", "<0x3E>"} & set(tok.token_strings(ids))


def test_add_bos_and_markers_decode_to_nothing(tok):
    ids = tok.encode("hello world", add_bos=True)
    assert ids[0] == BOS and ids[1:] == tok.encode("hello world")
    assert tok.decode(ids + [EOS]) == "hello world"
    assert tok.decode([PAD, PAD] + ids) == "hello world"


def test_special_tokens_decode_to_their_text(tok):
    ids = tok.encode("Sure.") + [tok.token_to_id("<extra_id_1>")]
    assert tok.decode(ids) == "Sure.<extra_id_1>"


def test_decode_matches_the_library(tok):
    """Our piece-by-piece decode reproduces SentencePiece / tokenizers exactly, invalid bytes included."""
    rng = random.Random(1)
    for _ in range(300):
        ids = _random_ids(tok, rng, rng.randint(0, 12))
        if tok._hf is not None:
            expected = tok._hf.decode([i for i in ids if i not in (PAD, BOS, EOS)], skip_special_tokens=False)
        else:  # deliberate differences: control pieces show their text and start a new segment
            ids = [i for i in ids if not tok._sp.is_control(i)]
            expected = tok._sp.decode(ids)
        assert tok.decode(ids) == expected, ids


def test_control_symbols_are_split_like_nemo(tokenizer_files):
    """<extra_id_N> as control symbols: split out of the text, each segment encoded on its own."""
    tok = Tokenizer.from_file(tokenizer_files["control"])
    sp = sentencepiece.SentencePieceProcessor(model_file=tokenizer_files["control"])
    assert tok.encode("Hi<extra_id_1>User\n") == sp.encode("Hi") + [5] + sp.encode("User\n")
    assert tok.decode(tok.encode("Hi<extra_id_1>User\n")) == "Hi<extra_id_1>User\n"


# ----------------------------------------------------------------------------- streaming
def _stream(tok: Tokenizer, ids: list[int], prompt_ids: list[int] | None = None) -> list[str]:
    decoder = tok.stream_decoder(prompt_ids)
    return [decoder.push(i) for i in ids] + [decoder.flush()]


def test_stream_adds_up_to_decode(tok):
    rng = random.Random(2)
    specials = [PAD, BOS, EOS, 4, 5, 6]
    for _ in range(400):
        ids = _random_ids(tok, rng, rng.randint(0, 16))
        for _ in range(rng.randint(0, 2)):
            ids.insert(rng.randint(0, len(ids)), rng.choice(specials))
        assert "".join(_stream(tok, ids)) == tok.decode(ids), ids


@pytest.mark.parametrize("text", TEXTS)
def test_stream_never_splits_a_character(tok, text):
    ids = tok.encode(text)
    pieces = _stream(tok, ids)
    assert "".join(pieces) == tok.decode(ids)
    assert all("\ufffd" not in p for p in pieces)


def test_stream_holds_bytes_until_the_character_is_complete(tok):
    ids = [tok.token_to_id(f"<0x{b:02X}>") for b in "🙂".encode()]
    if tok._sp is not None:
        assert _stream(tok, ids) == ["", "", "", "🙂", ""]
    else:  # tokenizers judges a byte run as a whole: it is settled only when the run ends
        assert _stream(tok, ids) == ["", "", "", "", "🙂"]
    assert _stream(tok, ids[:2]) == ["", "", "\ufffd" * 2]  # an unfinished character at the end


def test_stream_after_a_prompt_continues_its_text(tok):
    prompt = tok.encode("Question: what is it?\nAnswer:")
    reply = tok.encode(" It is a fox 🦊.")
    full = tok.decode(prompt + reply)
    assert "".join(_stream(tok, reply, prompt)) == full[len(tok.decode(prompt)):]


# ----------------------------------------------------------------------------- offsets
def test_offsets_index_the_decoded_text(tok):
    rng = random.Random(3)
    cases = [tok.encode(t) for t in TEXTS] + [_random_ids(tok, rng, 12) for _ in range(200)]
    for ids in cases:
        offsets, text = tok.offsets(ids), tok.decode(ids)
        assert len(offsets) == len(ids)
        assert offsets == sorted(offsets) and all(0 <= o <= len(text) for o in offsets)
        for i in range(1, len(ids) + 1):  # where no byte run is open, the prefix ends right there
            if i < len(ids) and not _is_byte(tok, ids[i - 1]) and ids[i - 1] not in (PAD, BOS, EOS):
                assert offsets[i] == len(tok.decode(ids[:i])), (ids, i)


def test_offsets_of_a_multibyte_character_point_at_it(tok):
    ids = tok.encode("a 🙂 b")
    text, offsets = tok.decode(ids), tok.offsets(ids)
    emoji = [o for i, o in zip(ids, offsets) if _is_byte(tok, i)]
    assert emoji == [text.index("🙂")] * 4


# ----------------------------------------------------------------------------- loading and saving
def test_from_dir_prefers_the_sentencepiece_model(tmp_path, tokenizer_files):
    Tokenizer.from_file(tokenizer_files["hf"]).save(tmp_path)
    assert Tokenizer.from_dir(tmp_path)._hf is not None
    Tokenizer.from_file(tokenizer_files["user"]).save(tmp_path)
    assert Tokenizer.from_dir(tmp_path)._sp is not None


def test_from_dir_takes_a_tokenizer_json_with_added_tokens_over_the_model(tmp_path, tokenizer_files):
    """A fine-tune ships the base model's tokenizer.model beside a tokenizer.json with the tokens it
    added (<|im_start|> ...): transformers reads the .json, and so must we, or the added ids would be
    outside the vocabulary."""
    from transformers import PreTrainedTokenizerFast

    Tokenizer.from_file(tokenizer_files["user"]).save(tmp_path)
    base = _llama_style_json(tokenizer_files["user"])
    base.add_special_tokens([tokenizers.AddedToken(t, special=True, normalized=False)
                             for t in ("<|im_start|>", "<|im_end|>")])
    base.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>"}))
    tok = Tokenizer.from_dir(tmp_path)
    theirs = PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"), eos_token="<|im_end|>")
    text = "<|im_start|>user\nhello<|im_end|>"
    assert tok.encode(text) == theirs.encode(text, add_special_tokens=False)
    assert tok.eos_id == theirs.eos_token_id and tok.vocab_size == len(theirs)


def test_save_keeps_the_tokenizer_config_it_was_read_with(tmp_path, tokenizer_files):
    """`nemotron convert` and training checkpoints save the tokenizer: the chat template and any other
    key of the tokenizer_config.json travel along, markers as the tokenizer resolved them."""
    source = tmp_path / "source"
    source.mkdir()
    source.joinpath("tokenizer.json").write_bytes(open(tokenizer_files["hf"], "rb").read())
    config = {"bos_token": "<s>", "eos_token": "</s>", "chat_template": "{{ messages[0]['content'] }} ✓",
              "model_max_length": 4096}
    source.joinpath("tokenizer_config.json").write_text(json.dumps(config))
    Tokenizer.from_dir(source).save(tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert {key: saved[key] for key in config} == config


def test_save_writes_the_file_unchanged(tmp_path, tok):
    path = tok.save(tmp_path / "out")
    assert path.read_bytes() == tok._raw
    again = Tokenizer.from_dir(tmp_path / "out")
    assert again.encode(CHAT) == tok.encode(CHAT) and again.vocab_size == tok.vocab_size


def test_from_sentencepiece_bytes(tokenizer_files):
    data = open(tokenizer_files["user"], "rb").read()
    assert Tokenizer.from_sentencepiece_bytes(data).encode(CHAT) == Tokenizer.from_file(
        tokenizer_files["user"]).encode(CHAT)


def test_markers_of_a_tokenizer_json_come_from_its_config(tmp_path, tokenizer_files):
    tmp_path.joinpath("tokenizer.json").write_bytes(open(tokenizer_files["hf"], "rb").read())
    tmp_path.joinpath("tokenizer_config.json").write_text(json.dumps(
        {"bos_token": {"content": "<extra_id_0>"}, "eos_token": "<extra_id_1>", "pad_token": None}))
    tok = Tokenizer.from_dir(tmp_path)
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (4, 5, PAD)


def test_missing_and_broken_files_are_clear_errors(tmp_path):
    with pytest.raises(TokenizerError, match=f"{tmp_path} holds neither tokenizer.model nor tokenizer.json"):
        Tokenizer.from_dir(tmp_path)
    with pytest.raises(TokenizerError, match="does not exist"):
        Tokenizer.from_file(tmp_path / "tokenizer.model")
    with pytest.raises(TokenizerError, match="not a valid SentencePiece model"):
        Tokenizer.from_sentencepiece_bytes(b"not a model")
    (tmp_path / "tokenizer.json").write_text("{broken")
    with pytest.raises(TokenizerError, match="cannot read tokenizer file"):
        Tokenizer.from_file(tmp_path / "tokenizer.json")


def test_add_bos_without_a_bos_token_is_an_error(tmp_path, tokenizer_files):
    tmp_path.joinpath("tokenizer.json").write_bytes(open(tokenizer_files["hf"], "rb").read())
    tmp_path.joinpath("tokenizer_config.json").write_text(json.dumps({"bos_token": "<nope>"}))
    with pytest.raises(TokenizerError, match="no BOS token"):
        Tokenizer.from_dir(tmp_path).encode("hi", add_bos=True)


def test_lone_surrogates_are_a_clear_error(sp_tokenizer_file):
    from nemotron.errors import TokenizerError
    from nemotron.tokenizer import Tokenizer

    with pytest.raises(TokenizerError, match="not valid Unicode at position 3"):
        Tokenizer.from_file(sp_tokenizer_file).encode("abc\ud800")


def test_a_sentencepiece_directory_keeps_its_chat_template(tmp_path, tokenizer_files):
    Tokenizer.from_file(tokenizer_files["user"]).save(tmp_path / "source")
    (tmp_path / "source" / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ x }}"}))
    tok = Tokenizer.from_dir(tmp_path / "source")
    assert tok._sp is not None and tok.chat_template == "{{ x }}"
    tok.save(tmp_path / "out")
    assert json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())["chat_template"] == "{{ x }}"
    (tmp_path / "source" / "tokenizer_config.json").write_text("[not an object")
    assert Tokenizer.from_dir(tmp_path / "source").chat_template is None  # a broken config is no reason to fail


def test_from_dir_falls_back_to_the_model_when_the_json_cannot_serve(tmp_path, tokenizer_files):
    """A .json that does not read, or whose added tokens the model has no embeddings for (a fine-tune
    that added [PAD] without resizing), leaves the .model in charge."""
    Tokenizer.from_file(tokenizer_files["user"]).save(tmp_path)
    (tmp_path / "tokenizer.json").write_text(json.dumps({"version": "9.0", "model": {}}))
    assert Tokenizer.from_dir(tmp_path)._sp is not None
    bigger = _llama_style_json(tokenizer_files["user"])
    bigger.add_special_tokens([tokenizers.AddedToken("[PAD]", special=True, normalized=False)])
    bigger.save(str(tmp_path / "tokenizer.json"))
    size = Tokenizer.from_file(tokenizer_files["user"]).vocab_size
    assert Tokenizer.from_dir(tmp_path, max_vocab=size)._sp is not None
    assert Tokenizer.from_dir(tmp_path, max_vocab=size + 1)._hf is not None
