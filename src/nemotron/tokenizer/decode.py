"""Token ids -> text, one id at a time, for `Tokenizer.decode`, `offsets` and `StreamDecoder`.

Two assemblers, chosen by the tokenizer's decoder (`Rules`):
- `Assembler` reproduces, piece by piece, SentencePiece's `Decode` (sentencepiece_processor.cc) and
  the SentencePiece-style `tokenizers` decoders (`Replace`, `ByteFallback`, `Fuse`, `Strip`,
  `Metaspace`): leading-space stripping, byte pieces such as `<0xE2>` held until their character is
  settled, control pieces starting a new segment.
- `WindowAssembler` lets the `tokenizers` library decode (ByteLevel, WordPiece, no decoder, ...) a
  short window of recent ids and emits what is new and final.
Both are used by `decode`, `offsets` and streaming alike, so streamed text adds up to `decode`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sentencepiece

if TYPE_CHECKING:
    from nemotron.tokenizer.tokenizer import Tokenizer

_SPACE = "\u2581"  # "▁", SentencePiece's whitespace symbol
_REPLACEMENT = "\ufffd"
# Tails of decoded text that transformers' clean-up could still rewrite once more text follows,
# by length: any n-character suffix in the set of pattern prefixes of length n.
_CLEANUP_PREFIXES = ((" ",), (" '", " n"), (" n'", " 'v", " 'r"))

# Piece kinds as the assembler sees them.
TEXT, BYTE, UNKNOWN, CONTROL, BOUNDARY = range(5)


@dataclass(frozen=True, slots=True)
class Rules:
    """How a backend's decoder turns pieces into text (see `Assembler`)."""

    sentencepiece: bool
    # SentencePiece's leading "▁" rule: "none", "once" (add_dummy_prefix), "all" (remove_extra_whitespaces)
    sp_strip: str = "none"
    byte_fallback: bool = False  # HF `ByteFallback`: a run of <0xNN> pieces that is not UTF-8 -> U+FFFD each
    strip_chars: tuple[str, int] = ("", 0)  # HF `Strip` after `Fuse`: drop up to n leading chars of the text
    metaspace: str = ""  # HF `Metaspace` decoder: its replacement char
    metaspace_first: bool = False  # ... dropped altogether from the first token
    library: bool = False  # any other decoder: the `tokenizers` library decodes (`WindowAssembler`)
    cleanup: bool = False  # ... followed by transformers' clean_up_tokenization


class StreamDecoder:
    """Token ids in, text out, one token at a time. `push` returns the text that token completes;
    it never returns half a character (byte pieces are held until their character is settled).
    All pushes plus `flush()` add up to exactly `decode(ids)`; after `prompt_ids`, to the part of
    `decode(prompt_ids + ids)` that follows `decode(prompt_ids)`."""

    def __init__(self, tokenizer: Tokenizer, prompt_ids: list[int] | None = None):
        self._assembler = tokenizer._assembler()
        for i in prompt_ids or ():
            self._assembler.push(i)  # sets the leading-space state; the prompt's text is not returned
        # Prompt characters the assembler still holds (the prompt ended in a byte run) come out
        # with the first pushes; they belong to the prompt, so skip them.
        self._skip = len(tokenizer.decode(prompt_ids)) - self._assembler.length if prompt_ids else 0

    def push(self, token_id: int) -> str:
        return self._unskipped(self._assembler.push(token_id))

    def flush(self) -> str:
        """Text still held at the end of the stream (an unfinished byte sequence, as U+FFFD)."""
        return self._unskipped(self._assembler.finish())

    def _unskipped(self, text: str) -> str:
        if self._skip:
            cut = min(self._skip, len(text))
            self._skip -= cut
            text = text[cut:]
        return text


class WindowAssembler:
    """Ids -> text through the `tokenizers` library's own decoder, for the decoders `Assembler`
    does not model (ByteLevel, WordPiece, none, ...). Each id decodes a short window of recent ids
    and emits what is new and final in the window's text (the incremental scheme of vLLM and TGI).
    Not final: trailing U+FFFD (a character whose bytes are still coming) and, with transformers'
    clean-up, a tail that a later token could still rewrite (" " before ".", " '" before "s", ...)."""

    def __init__(self, tokenizer: Tokenizer, track_offsets: bool = False):
        self._tok = tokenizer
        self._ids: list[int] = []  # markers (BOS/EOS/PAD) dropped, as in Tokenizer.decode
        self._start = self._read = 0  # window start; where the window's text was last all final
        self._emitted = 0  # characters of the window's text emitted
        self._pending = 0  # characters held back that are whole characters (for offsets)
        self.length = 0
        self.offsets: list[int] = []
        self._track = track_offsets

    def push(self, token_id: int) -> str:
        boundary = self._tok._is_boundary(token_id)
        if self._track:
            self.offsets.append(self.length + self._pending)
        if boundary:
            return ""
        self._ids.append(token_id)
        return self._advance(final=False)

    def finish(self) -> str:
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        decode = self._tok._library_decode
        text = decode(self._ids[self._start:])
        final_length = len(text) if final else len(text) - self._unsettled(text)
        out = text[self._emitted:final_length]
        self._emitted = max(self._emitted, final_length)
        self._pending = max(0, len(text.rstrip(_REPLACEMENT)) - self._emitted)
        self.length += len(out)
        if final_length == len(text) and not final:  # all final: slide the window, one step of context kept
            self._start, self._read = self._read, len(self._ids)
            self._emitted = len(decode(self._ids[self._start:]))
        return out

    def _unsettled(self, text: str) -> int:
        held = len(text) - len(text.rstrip(_REPLACEMENT))
        if self._tok._rules.cleanup:
            tail = text[:len(text) - held]
            held += max((n for n in range(1, 4) if tail.endswith(_CLEANUP_PREFIXES[n - 1])), default=0)
        return held


class Assembler:
    """Pieces -> text, incrementally, reproducing the library decoders:
    SentencePiece's `SentencePieceProcessor::Decode` (sentencepiece_processor.cc) and the
    `tokenizers` decoders `Replace`, `ByteFallback`, `Fuse`, `Strip`, `Metaspace`."""

    def __init__(self, tokenizer: Tokenizer, track_offsets: bool = False):
        self._tok, self._rules = tokenizer, tokenizer._rules
        self.length = 0  # characters emitted so far
        self.offsets: list[int] = []
        self._track = track_offsets
        self._run: list[tuple[int | None, int]] = []  # held byte pieces: (byte, token index)
        self._count = 0
        self._strip_left = self._rules.strip_chars[1]
        self._first_token = True
        # SentencePiece's leading-space state; "segment" = text since the last control piece.
        self._is_bos_ws, self._bos_ws_seen, self._segment_has_text = True, False, False

    def push(self, token_id: int) -> str:
        kind, value = self._tok._kind(token_id)
        index = self._count
        self._count += 1
        if self._track:
            self.offsets.append(self.length)
        if kind == BYTE:
            self._run.append((value, index))
            return self._drain(final=False)
        if kind == BOUNDARY and not self._rules.sentencepiece:
            # Dropped before decoding, as SentencePiece drops it; a byte run goes on across it.
            if self._run:
                self._run.append((None, index))
            return ""
        out = self._drain(final=True)
        if self._track:
            self.offsets[index] = self.length
        text = self._piece_text(kind, value)
        out += self._emit(text, [(index, 0)])
        if kind in (CONTROL, BOUNDARY):  # a control piece ends a segment (see _init_sentencepiece)
            self._is_bos_ws, self._bos_ws_seen, self._segment_has_text = True, False, False
        return out

    def finish(self) -> str:
        return self._drain(final=True)

    def _piece_text(self, kind: int, piece: str) -> str:
        rules = self._rules
        if not rules.sentencepiece:
            if not rules.metaspace:
                return piece
            drop = self._first_token and rules.metaspace_first
            self._first_token = False
            return piece.replace(rules.metaspace, "" if drop else " ")
        # SentencePiece: strip the "▁" that encoding put in front of the text (its dummy prefix).
        if self._bos_ws_seen or self._segment_has_text:
            self._is_bos_ws = False
        self._bos_ws_seen = False
        if kind == BOUNDARY:
            return ""
        if kind != TEXT:  # control pieces show their own text; unknown ones the unk surface
            return piece
        if self._is_bos_ws and rules.sp_strip != "none" and piece.startswith(_SPACE):
            piece = piece[1:]
            self._bos_ws_seen = rules.sp_strip == "once"  # "all": keep stripping leading spaces
        return piece.replace(_SPACE, " ")

    def _drain(self, final: bool) -> str:
        """Turn held bytes into text as far as they are settled."""
        run = self._run
        if not run or (not final and not self._rules.sentencepiece):
            return ""  # tokenizers' ByteFallback judges a whole run at once
        data = bytes(b for b, _ in run if b is not None)
        if not self._rules.sentencepiece:
            self._run = []
            try:
                text = data.decode("utf-8")
                char_of_byte = [k for k, ch in enumerate(text) for _ in ch.encode()]
            except UnicodeDecodeError:
                text, char_of_byte = _REPLACEMENT * len(data), list(range(len(data)))
            marks, seen = [], 0
            for byte, token in run:  # a dropped marker inside the run sits at the next byte's char
                marks.append((token, char_of_byte[seen] if seen < len(data) else len(text)))
                seen += byte is not None
            return self._emit(text, marks)
        # SentencePiece: one character at a time; an invalid lead byte becomes U+FFFD on its own.
        chars, marks, pos = [], [], 0
        while pos < len(data):
            size = _utf8_length(data[pos])
            if pos + size > len(data) and not final:
                break  # may still become a valid character
            try:
                ch = data[pos:pos + size].decode("utf-8")
            except UnicodeDecodeError:
                ch, size = _REPLACEMENT, 1
            marks += [(t, len(chars)) for _, t in run[pos:pos + size]]
            chars.append(ch)
            pos += size
        self._run = run[pos:]
        return self._emit("".join(chars), marks)

    def _emit(self, text: str, marks: list[tuple[int, int]]) -> str:
        """Append text; `marks` are (token index, char index in text) where each token starts."""
        cut = 0
        if self._strip_left:
            char = self._rules.strip_chars[0]
            while cut < len(text) and self._strip_left and text[cut] == char:
                cut += 1
                self._strip_left -= 1
            if cut < len(text):
                self._strip_left = 0
        text = text[cut:]
        if self._track:
            for token, at in marks:
                self.offsets[token] = self.length + max(0, at - cut)
        self.length += len(text)
        if text:
            self._segment_has_text = True
        return text


def _utf8_length(lead: int) -> int:
    if lead < 0x80:
        return 1
    if 0xC0 <= lead < 0xE0:
        return 2
    if 0xE0 <= lead < 0xF0:
        return 3
    return 4 if 0xF0 <= lead < 0xF8 else 1  # a stray continuation byte: invalid on its own


def sentencepiece_rules(sp: sentencepiece.SentencePieceProcessor) -> Rules:
    # Decode strips the first piece's leading "▁" when the model adds a dummy prefix, and every
    # leading one when it removes extra whitespace. Both flags live in the model's normalizer
    # spec; reading them back through decode avoids parsing the protobuf by hand.
    space = sp.piece_to_id(_SPACE)
    if space == sp.unk_id() or sp.is_control(space) or sp.is_byte(space):
        return Rules(sentencepiece=True, sp_strip="once")  # the usual setting; cannot probe it
    kept = len(sp.decode([space, space]))
    return Rules(sentencepiece=True, sp_strip={2: "none", 1: "once"}.get(kept, "all"))


def huggingface_rules(decoder: dict | None, config: dict,
                       model_type: str | None) -> tuple[Rules, tuple[tuple[str, str], ...]]:
    """The SentencePiece-style decoders `transformers` writes for Llama-like tokenizers are modelled
    piece by piece (`Assembler`); every other decoder runs in the library (`WindowAssembler`), as
    does any tokenizer whose config asks for `transformers`' clean-up of tokenization spaces (which
    transformers skips for BPE models unless told otherwise)."""
    forced = "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output"
    cleanup = bool(config.get("clean_up_tokenization_spaces")) and (model_type != "BPE" or bool(config.get(forced)))
    library = Rules(sentencepiece=False, library=True, cleanup=cleanup)
    kind = decoder.get("type") if decoder else "none"
    if library.cleanup:
        return library, ()
    if kind == "Metaspace":
        scheme = decoder.get("prepend_scheme", "always" if decoder.get("add_prefix_space", True) else "never")
        return Rules(sentencepiece=False, metaspace=decoder.get("replacement", _SPACE),
                      metaspace_first=scheme != "never"), ()
    steps = decoder.get("decoders", []) if kind == "Sequence" else []
    names = " ".join(step["type"] for step in steps)
    if not steps or not re.fullmatch(r"(Replace ?)*(ByteFallback ?)?(Fuse ?)?(Strip)?", names):
        return library, ()
    replacements, strip = [], ("", 0)
    for step in steps:
        if step["type"] == "Replace":
            if "String" not in step["pattern"]:
                return library, ()
            replacements.append((step["pattern"]["String"], step["content"]))
        elif step["type"] == "Strip":
            if step.get("stop", 0) or "Fuse" not in names:
                return library, ()
            strip = (step["content"], step.get("start", 0))
    return Rules(sentencepiece=False, byte_fallback="ByteFallback" in names, strip_chars=strip), \
        tuple(replacements)


_CLEANUPS = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
             (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def clean_up_tokenization(text: str) -> str:
    """`transformers`' clean_up_tokenization_spaces: no space before punctuation and contractions."""
    for before, after in _CLEANUPS:
        text = text.replace(before, after)
    return text
