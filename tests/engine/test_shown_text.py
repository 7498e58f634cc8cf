"""Shown text and token entries: decoded with the prompt, cut at stop strings, consistent."""
from __future__ import annotations

import random

import pytest

from nemotron.engine.output import ShownText, Token
from nemotron.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tokenizer(sp_tokenizer_file):
    return Tokenizer.from_file(sp_tokenizer_file)


def feed(tokenizer, prompt, ids, stops=(), hidden=frozenset({3})):
    text = ShownText(tokenizer, prompt, list(stops), set(hidden))
    shown, entries = "", []
    for token_id in ids:
        s, e = text.add(Token(token_id, -1.0))
        shown, entries = shown + s, entries + e
        if text.stopped:
            break
    s, e = text.finish()
    return shown + s, entries + e, text.stopped


def prompt_of(tokenizer, rng) -> list[int]:
    """Whole characters (a prompt ending inside a character cannot be continued as text)."""
    return tokenizer.encode(rng.choice(["The cat", "Über café", "a 😀", "Price: 3 + 4", "x"]))


def test_text_continues_the_prompt_and_entries_add_up_to_it(tokenizer):
    rng = random.Random(0)
    for _ in range(300):
        prompt = prompt_of(tokenizer, rng)
        ids = [rng.randrange(4, 320) for _ in range(rng.randint(0, 12))]  # byte pieces included
        text, entries, stopped = feed(tokenizer, prompt, ids)
        assert tokenizer.decode(prompt) + text == tokenizer.decode(prompt + ids)
        assert "".join(e.text for e in entries) == text
        assert [e.id for e in entries] == ids and not stopped


def test_first_piece_keeps_its_space(tokenizer):
    prompt, ids = tokenizer.encode("The cat sees"), tokenizer.encode(" the dog")  # "▁t", "he", ...
    assert tokenizer.decode(ids) == "the dog"  # on its own, the dummy-prefix space goes
    assert feed(tokenizer, prompt, ids)[0] == " the dog"


def test_stop_string_cuts_text_and_entries(tokenizer):
    rng = random.Random(1)
    for _ in range(300):
        prompt = prompt_of(tokenizer, rng)
        ids = [rng.randrange(4, 320) for _ in range(12)]
        full = tokenizer.decode(prompt + ids)[len(tokenizer.decode(prompt)):]
        if len(full) < 4:
            continue
        start = rng.randrange(0, len(full) - 2)
        stop = full[start:start + rng.randint(1, 3)]
        text, entries, stopped = feed(tokenizer, prompt, ids, [stop])
        assert stopped and text == full[:full.index(stop)]
        assert "".join(e.text for e in entries) == text


def test_hidden_stop_tokens_show_nothing(tokenizer):
    ids = tokenizer.encode("a dog")
    text, entries, _ = feed(tokenizer, [300], ids + [3])
    assert [e.id for e in entries] == ids and text == tokenizer.decode([300] + ids)[1:]
