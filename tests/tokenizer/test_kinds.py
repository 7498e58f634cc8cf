"""Every kind of tokenizer.json the `tokenizers` library decodes, trained here in well under a second:
byte-level BPE in the GPT-2, Llama-3, Mistral-NeMo (Tekken) and Nemotron-H styles, WordLevel without
a decoder, WordPiece with transformers' clean-up, and Unigram. Decoded text, whole and streamed, must
equal what `transformers` (PreTrainedTokenizerFast on the same files) decodes."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

from nemotron.checkpoint.gguf import PRE_TOKENIZERS
from nemotron.tokenizer import Tokenizer

SPECIALS = ["<extra_id_0>", "<extra_id_1>", "<extra_id_2>"]
# Pre-tokenizer patterns of the published tokenizers (Llama-3's is also Nemotron-H's; Tekken is Mistral-NeMo's).
LLAMA3_PATTERN, TEKKEN_PATTERN = PRE_TOKENIZERS["llama-bpe"], PRE_TOKENIZERS["tekken"]
TEXTS = [
    "hello world",
    "The quick brown fox jumps over the lazy dog.\nNew line\n\nand\ttab  two spaces ",
    " leading space",
    "Café naïve résumé — “quoted” ß, isn't it? I'm sure!",
    "日本語のテキスト and 中文",
    "emoji 🙂🚀 snowman ☃ flag 🇫🇷",
    "<extra_id_0>System\n\n<extra_id_1>User\nWrite a poem.\n<extra_id_1>Assistant\n",
]


def _corpus() -> list[str]:
    rng = random.Random(0)
    words = ("the quick brown fox jumps over lazy dog hello world system user assistant model token "
             "language data python code write poem answer question café naïve isn't I'm").split()
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) for _ in range(800)]
    return lines + ["Résumé — “quotes” 日本語 中文 ß\tTab  two  spaces. 🙂🚀☃🇫🇷"] * 3 + TEXTS


def train_byte_level_bpe(vocab_size: int = 600, pattern: str | None = None,
                         specials: tuple[str, ...] = ("<|endoftext|>", *SPECIALS)) -> tokenizers.Tokenizer:
    """GPT-2 style (`pattern` None: ByteLevel's own regex) or a Split-pattern style (Llama-3, Tekken,
    whose published files also take a word that is a token whole: ignore_merges)."""
    tok = tokenizers.Tokenizer(models.BPE(ignore_merges=pattern is not None))
    if pattern is None:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(tokenizers.Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(specials), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer)
    return tok


def _word_level() -> tokenizers.Tokenizer:
    tok = tokenizers.Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(_corpus(), trainers.WordLevelTrainer(special_tokens=["[UNK]", *SPECIALS],
                                                                 show_progress=False))
    return tok  # no decoder: the library joins tokens with spaces


def _word_piece() -> tokenizers.Tokenizer:
    tok = tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(_corpus(), trainers.WordPieceTrainer(vocab_size=500, show_progress=False,
                                                                 special_tokens=["[UNK]", "[PAD]", *SPECIALS]))
    return tok


def _unigram() -> tokenizers.Tokenizer:
    tok = tokenizers.Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(_corpus(), trainers.UnigramTrainer(vocab_size=400, unk_token="<unk>", show_progress=False,
                                                               special_tokens=["<unk>", "<s>", "</s>", *SPECIALS]))
    return tok


KINDS = {
    # name: (build, tokenizer_config.json or None)
    "gpt2": (lambda: train_byte_level_bpe(), {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}),
    "llama3": (lambda: train_byte_level_bpe(pattern=LLAMA3_PATTERN, specials=(
        "<|begin_of_text|>", "<|end_of_text|>", *SPECIALS)),
        {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>", "clean_up_tokenization_spaces": True}),
    "mistral_nemo": (lambda: train_byte_level_bpe(pattern=TEKKEN_PATTERN, specials=("<unk>", "<s>", "</s>", *SPECIALS)),
                     {"bos_token": "<s>", "eos_token": "</s>"}),
    "nemotron_h": (lambda: train_byte_level_bpe(pattern=LLAMA3_PATTERN, specials=(
        "<unk>", "<s>", "</s>", "<SPECIAL_10>", *SPECIALS)), {"bos_token": "<s>", "eos_token": "</s>"}),
    "word_level": (_word_level, None),
    "word_piece": (_word_piece, {"clean_up_tokenization_spaces": True, "pad_token": "[PAD]"}),
    "unigram": (_unigram, {"bos_token": "<s>", "eos_token": "</s>"}),
}


@pytest.fixture(scope="module", params=list(KINDS))
def pair(request, tmp_path_factory):
    """(our Tokenizer, transformers' tokenizer) on the same files."""
    from transformers import PreTrainedTokenizerFast

    build, config = KINDS[request.param]
    directory: Path = tmp_path_factory.mktemp(request.param)
    build().save(str(directory / "tokenizer.json"))
    if config is not None:
        (directory / "tokenizer_config.json").write_text(json.dumps(config))
    ours = Tokenizer.from_dir(directory)
    theirs = PreTrainedTokenizerFast(tokenizer_file=str(directory / "tokenizer.json"), **(config or {}))
    return ours, theirs


def _markers(tok: Tokenizer) -> set[int]:
    return {i for i in (tok.bos_id, tok.eos_id, tok.pad_id) if i is not None}


def _random_ids(tok: Tokenizer, rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(tok.vocab_size) for _ in range(n)]


def _stream(tok: Tokenizer, ids: list[int], prompt: list[int] | None = None) -> list[str]:
    decoder = tok.stream_decoder(prompt)
    return [decoder.push(i) for i in ids] + [decoder.flush()]


@pytest.mark.parametrize("text", TEXTS)
def test_encode_and_decode_like_transformers(pair, text):
    ours, theirs = pair
    ids = ours.encode(text)
    assert ids == theirs.encode(text, add_special_tokens=False)
    expected = theirs.decode(ids, skip_special_tokens=False)
    assert ours.decode(ids) == expected
    assert "".join(_stream(ours, ids)) == expected


def test_random_ids_decode_like_transformers_whole_and_streamed(pair):
    ours, theirs = pair
    rng = random.Random(1)
    for _ in range(150):
        ids = [i for i in _random_ids(ours, rng, rng.randint(0, 14)) if i not in _markers(ours)]
        expected = theirs.decode(ids, skip_special_tokens=False)
        assert ours.decode(ids) == expected, ids
        assert "".join(_stream(ours, ids)) == expected, ids


def test_markers_decode_to_nothing(pair):
    ours, _ = pair
    ids = ours.encode("hello world")
    for marker in _markers(ours):
        assert ours.decode([marker] + ids + [marker]) == ours.decode(ids)


def test_stream_never_splits_a_character(pair):
    ours, _ = pair
    for text in TEXTS:
        pieces = _stream(ours, ours.encode(text))
        assert "".join(pieces) == ours.decode(ours.encode(text))
        assert all("\ufffd" not in p for p in pieces), pieces


def test_stream_after_a_prompt_continues_its_text(pair):
    ours, _ = pair
    prompt, reply = ours.encode("Question: what is it?\nAnswer:"), ours.encode(" It is a fox 🙂, isn't it.")
    full = ours.decode(prompt + reply)
    assert "".join(_stream(ours, reply, prompt)) == full[len(ours.decode(prompt)):]


def test_offsets_index_the_decoded_text(pair):
    ours, _ = pair
    rng = random.Random(3)
    for ids in [ours.encode(t) for t in TEXTS] + [_random_ids(ours, rng, 10) for _ in range(60)]:
        offsets, text = ours.offsets(ids), ours.decode(ids)
        assert len(offsets) == len(ids) and offsets == sorted(offsets)
        assert all(0 <= o <= len(text) for o in offsets)
        for i in range(1, len(ids)):  # a token whose prefix decodes cleanly starts right after it
            prefix = ours.decode(ids[:i])
            if "\ufffd" not in prefix and text.startswith(prefix) and ids[i] not in _markers(ours):
                assert offsets[i] == len(prefix), (ids, i)


def test_offsets_of_a_multibyte_character_point_at_it(pair):
    ours, _ = pair
    ids = ours.encode("a 🙂 b")
    text, offsets = ours.decode(ids), ours.offsets(ids)
    if "🙂" not in text:
        pytest.skip("the vocabulary has no way to spell the emoji (it becomes the unknown token)")
    start = text.index("🙂")
    for token_id, offset in zip(ids, offsets):
        piece = ours.decode([token_id])
        if "\ufffd" in piece or "🙂" in piece:
            assert offset <= start, (ids, offsets)


# ---- transformers' clean-up of tokenization spaces, streamed ----------------------------------------

CLEANUP_ALPHABET = list(" '.?!,ntvermsax") + ["  ", "'", "🙂", "日", ")"]


def test_cleanup_in_parts_is_the_cleanup_of_the_whole():
    """The clean-up runs on streamed text in parts cut at `_safe_cut`; joined, they must be what
    transformers' own clean-up makes of the whole, for any cut it allows."""
    from transformers import PreTrainedTokenizerBase

    from nemotron.tokenizer.decode import _safe_cut, _safe_end, clean_up_tokenization

    def reference(text: str) -> str:  # a method that reads nothing of its instance
        return PreTrainedTokenizerBase.clean_up_tokenization(None, text)

    rng = random.Random(0)
    cuts = 0
    for _ in range(20000):
        text = "".join(rng.choice(CLEANUP_ALPHABET) for _ in range(rng.randint(1, 12)))
        assert clean_up_tokenization(text) == reference(text), text
        for a in range(1, len(text)):
            if _safe_cut(text, a):
                cuts += 1
                assert reference(text[:a]) + reference(text[a:]) == reference(text), (text, a)
    assert cuts > 20000  # the rule allows cuts often enough to stream
    for _ in range(20000):  # a cut at the end: whatever follows
        text = "".join(rng.choice(CLEANUP_ALPHABET) for _ in range(rng.randint(1, 8)))
        if _safe_end(text):
            for _ in range(5):
                more = "".join(rng.choice(CLEANUP_ALPHABET) for _ in range(rng.randint(0, 8)))
                assert reference("x" + text + more) == reference("x" + text) + reference(more), (text, more)


def _quote_heavy(kind: str) -> tokenizers.Tokenizer:
    """A vocabulary of punctuation, contraction pieces and words, where the clean-up has work at most
    token boundaries: BERT-style WordPiece (as bert-base-uncased ships) or Unigram with Metaspace."""
    lines = ["he said '' hello '' . it's n't 've 're 'm 's , ! ?", "the quick brown fox , isn't it ?"] * 20
    if kind == "word_piece":
        tok = tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=120, special_tokens=["[UNK]", "[PAD]"], show_progress=False)
    else:
        tok = tokenizers.Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=80, unk_token="<unk>", special_tokens=["<unk>", "<s>", "</s>"],
                                          show_progress=False)
    tok.train_from_iterator(_corpus()[:50] + lines, trainer)
    return tok


@pytest.mark.parametrize("kind", ["word_piece", "unigram"])
def test_cleanup_streams_like_transformers_decodes(tmp_path, kind):
    """Streamed text with the clean-up on adds up to transformers' decode, and offsets stay in order:
    the clean-up deletes spaces on both sides of a token boundary (" ' " -> "'"), which a window of
    recent tokens, cleaned on its own, got wrong ("the '' quick" streamed as "the''uick")."""
    from transformers import PreTrainedTokenizerFast

    _quote_heavy(kind).save(str(tmp_path / "tokenizer.json"))
    config = {"clean_up_tokenization_spaces": True, "bos_token": "<s>", "eos_token": "</s>"}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    ours = Tokenizer.from_dir(tmp_path)
    theirs = PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"), **config)
    punctuation = [i for i in range(ours.vocab_size) if not ours.id_to_piece(i).strip("▁#").isalpha()]
    rng = random.Random(2)
    samples = [ours.encode(t) for t in ("the '' quick '' brown", "x '' y", "it 's , isn't it ?")]
    samples += [[rng.choice(punctuation if rng.random() < 0.7 else range(ours.vocab_size)) for _ in range(12)]
                for _ in range(400)]
    for ids in samples:
        ids = [i for i in ids if i not in _markers(ours)]
        expected = theirs.decode(ids, skip_special_tokens=False)
        assert ours.decode(ids) == expected, ids
        assert "".join(_stream(ours, ids)) == expected, ids
        offsets = ours.offsets(ids)
        assert offsets == sorted(offsets) and all(o <= len(expected) for o in offsets), (ids, offsets)


def test_cleanup_streams_each_word_with_its_token(tmp_path):
    """The clean-up holds back only text a later token could still rewrite: a word ending in a letter
    goes out with its own token (not one character late, which also found stop strings a token late)."""
    _quote_heavy("word_piece").save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"clean_up_tokenization_spaces": True}))
    tok = Tokenizer.from_dir(tmp_path)
    ids = tok.encode("the quick brown fox jumps over the lazy dog")
    pieces = _stream(tok, ids)
    for k in range(len(ids)):
        upto = tok.decode(ids[:k + 1])
        if upto[-1] not in "nvr":
            assert "".join(pieces[:k + 1]) == upto, (k, pieces)


def test_library_byte_fallback_holds_a_run_of_byte_pieces(tmp_path):
    """A decoder the library runs (a Replace by regex) with a ByteFallback step judges a run of byte
    pieces as a whole: a 3-byte character followed by an invalid byte is four U+FFFD. The stream must
    not emit the character before the run is over; offsets put each byte at its own U+FFFD."""
    from transformers import PreTrainedTokenizerFast

    vocab = [("<unk>", 0.0), ("<s>", 0.0), ("</s>", 0.0)] + [(f"<0x{b:02X}>", 0.0) for b in range(256)]
    tok = tokenizers.Tokenizer(models.Unigram(vocab + [("▁a", -1.0), ("b", -1.0)], unk_id=0, byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace(tokenizers.Regex("▁"), " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.save(str(tmp_path / "tokenizer.json"))
    ours = Tokenizer.from_dir(tmp_path)
    theirs = PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    a, b = ours.token_to_id("▁a"), ours.token_to_id("b")
    byte = {n: ours.token_to_id(f"<0x{n:02X}>") for n in (0xE6, 0x97, 0xA5, 0xFF)}
    invalid = [a, byte[0xE6], byte[0x97], byte[0xA5], byte[0xFF], b]
    valid = [a, byte[0xE6], byte[0x97], byte[0xA5], b]
    marker_inside = [a, byte[0xE6], ours.bos_id, byte[0x97], byte[0xA5], b]
    for ids, offsets in ((invalid, [0, 1, 2, 3, 4, 5]), (valid, [0, 1, 1, 1, 2]), (marker_inside, [0, 1, 1, 1, 1, 2])):
        expected = theirs.decode([i for i in ids if i != ours.bos_id])
        assert ours.decode(ids) == expected
        assert "".join(_stream(ours, ids)) == expected
        assert ours.offsets(ids) == offsets
