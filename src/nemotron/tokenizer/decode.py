"""Token ids -> text, one id at a time, for `Tokenizer.decode`, `offsets` and `StreamDecoder`.

Two assemblers, chosen by the tokenizer's decoder (`Rules`):
- `Assembler` reproduces, piece by piece, SentencePiece's `Decode` (sentencepiece_processor.cc) and
  the SentencePiece-style `tokenizers` decoders (`Replace`, `ByteFallback`, `Fuse`, `Strip`,
  `Metaspace`): leading-space stripping, byte pieces such as `<0xE2>` held until their character is
  settled, control pieces starting a new segment.
- `WindowAssembler` lets the `tokenizers` library decode (ByteLevel, WordPiece, no decoder, ...) a
  short window of recent ids and emits what is new and final.
Either is followed by `CleanedAssembler` where the config asks for `transformers`' clean-up of
tokenization spaces, which rewrites text across token boundaries (" ' " -> "'" takes the space after
the quote too), so it runs on the assembled text, not inside a window.
All are used by `decode`, `offsets` and streaming alike, so streamed text adds up to `decode`.
"""
from __future__ import annotations

import json
import re
from bisect import bisect_left
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sentencepiece

if TYPE_CHECKING:
    from nemotron.tokenizer.tokenizer import Tokenizer

_SPACE = "\u2581"  # "▁", SentencePiece's whitespace symbol
_REPLACEMENT = "\ufffd"

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
    cleanup: bool = False  # either followed by transformers' clean_up_tokenization (`CleanedAssembler`)


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
    Not final: trailing U+FFFD (a character whose bytes are still coming) and, under a decoder with
    a `ByteFallback` step, the text of a trailing run of byte pieces, which the library judges as a
    whole (one invalid byte turns the run's valid characters into U+FFFD too)."""

    def __init__(self, tokenizer: Tokenizer, track_offsets: bool = False):
        self._tok = tokenizer
        self._ids: list[int] = []  # markers (BOS/EOS/PAD) dropped, as in Tokenizer.decode
        self._start = self._read = 0  # window start; where the window's text was last all final
        self._emitted = 0  # characters of the window's text emitted
        self._pending = 0  # characters held back that are whole characters (for offsets)
        self._run: list[tuple[int | None, int]] = []  # trailing byte pieces: (byte or None for a marker, token)
        self._run_start = 0  # where the run starts in self._ids
        self.length = 0
        self.offsets: list[int] = []
        self._track = track_offsets

    def push(self, token_id: int) -> str:
        boundary = self._tok._is_boundary(token_id)
        kind, byte = self._tok._kind(token_id) if self._tok._rules.byte_fallback else (TEXT, None)
        run_end = self._close_run() if kind != BYTE and not boundary else None
        if self._track:
            self.offsets.append(self.length + self._pending if run_end is None else run_end)
        if boundary:
            if self._run:  # dropped before decoding: the run goes on across it
                self._run.append((None, len(self.offsets) - 1))
            return ""
        if kind == BYTE:
            if not self._run:
                self._run_start = len(self._ids)
            self._run.append((byte, len(self.offsets) - 1))
        self._ids.append(token_id)
        return self._advance(final=False)

    def finish(self) -> str:
        self._close_run()
        return self._advance(final=True)

    def _close_run(self) -> int | None:
        """The run of byte pieces is over: its tokens' offsets, and where its text ends (None: no run)."""
        if not self._run:
            return None
        text, char_of_byte = byte_run_text(bytes(b for b, _ in self._run if b is not None))
        base = self.offsets[self._run[0][1]] if self._track else 0
        if self._track:
            seen = 0
            for byte, token in self._run:  # a dropped marker inside the run sits at the next byte's char
                self.offsets[token] = base + (char_of_byte[seen] if seen < len(char_of_byte) else len(text))
                seen += byte is not None
        self._run = []
        return base + len(text)

    def _advance(self, final: bool) -> str:
        decode = self._tok._raw_library_decode
        text = decode(self._ids[self._start:])
        final_length = len(text) if final else len(text.rstrip(_REPLACEMENT))
        if self._run and not final:
            final_length = min(final_length, len(decode(self._ids[self._start:self._run_start])))
        out = text[self._emitted:final_length]
        self._emitted = max(self._emitted, final_length)
        self._pending = max(0, len(text.rstrip(_REPLACEMENT)) - self._emitted)
        self.length += len(out)
        if final_length == len(text) and not final:  # all final: slide the window, one step of context kept
            self._start, self._read = self._read, len(self._ids)
            self._emitted = len(decode(self._ids[self._start:]))
        return out



class CleanedAssembler:
    """Another assembler's text through `transformers`' clean_up_tokenization, incrementally. The
    clean-up only deletes spaces, by patterns that start with a space and match left to right, one
    pass per pattern, so a match can reach back past text already seen (" ' " takes both spaces
    around a quote). The text is cleaned in parts cut where no match of any pass can span the cut
    (`_safe_cut`): cleaning the parts one by one gives the clean-up of the whole. Offsets are the
    inner assembler's, less the spaces deleted before them."""

    def __init__(self, inner: Assembler | WindowAssembler):
        self._inner = inner
        self._raw = ""  # inner text after the last cut, not yet cleaned
        self._base = 0  # inner characters before self._raw
        self._deleted: list[int] = []  # positions in the inner text that the clean-up deleted
        self.length = 0

    @property
    def offsets(self) -> list[int]:
        return [p - bisect_left(self._deleted, p) for p in self._inner.offsets]

    def push(self, token_id: int) -> str:
        seen = len(self._raw)
        self._raw += self._inner.push(token_id)
        if self._raw and _safe_end(self._raw):  # the usual case: the token's text goes out with it
            return self._clean(len(self._raw))
        cut = next((a for a in range(len(self._raw) - 1, max(seen, 1) - 1, -1) if _safe_cut(self._raw, a)), 0)
        return self._clean(cut)

    def finish(self) -> str:
        self._raw += self._inner.finish()
        return self._clean(len(self._raw))

    def _clean(self, cut: int) -> str:
        if not cut:
            return ""
        part, self._raw = self._raw[:cut], self._raw[cut:]
        kept = _cleanup_kept(part)
        self._deleted += [self._base + k for k in sorted(set(range(len(part))).difference(kept))]
        self._base += cut
        text = "".join(part[k] for k in kept)
        self.length += len(text)
        return text


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
            text, char_of_byte = byte_run_text(data)
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


def byte_run_text(data: bytes) -> tuple[str, list[int]]:
    """The text `tokenizers`' ByteFallback makes of a run of byte pieces (U+FFFD for each byte unless
    the whole run is UTF-8), and the character each byte lands in."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return _REPLACEMENT * len(data), list(range(len(data)))
    return text, [k for k, ch in enumerate(text) for _ in ch.encode()]


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
    piece by piece (`Assembler`); every other decoder runs in the library (`WindowAssembler`). Either
    is followed by `transformers`' clean-up of tokenization spaces where the config asks for it
    (which transformers skips for BPE models unless told otherwise)."""
    forced = "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output"
    cleanup = bool(config.get("clean_up_tokenization_spaces")) and (model_type != "BPE" or bool(config.get(forced)))
    library = Rules(sentencepiece=False, library=True, cleanup=cleanup,
                    byte_fallback='"ByteFallback"' in json.dumps(decoder))  # a step anywhere in the decoder
    kind = decoder.get("type") if decoder else "none"
    if kind == "Metaspace":
        scheme = decoder.get("prepend_scheme", "always" if decoder.get("add_prefix_space", True) else "never")
        return Rules(sentencepiece=False, metaspace=decoder.get("replacement", _SPACE),
                      metaspace_first=scheme != "never", cleanup=cleanup), ()
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
    return Rules(sentencepiece=False, byte_fallback="ByteFallback" in names, strip_chars=strip, cleanup=cleanup), \
        tuple(replacements)


# transformers' clean_up_tokenization, in its order: (pattern, positions in it that are deleted)
_CLEANUPS = ((" .", (0,)), (" ?", (0,)), (" !", (0,)), (" ,", (0,)), (" ' ", (0, 2)), (" n't", (0,)),
             (" 'm", (0,)), (" 's", (0,)), (" 've", (0,)), (" 're", (0,)))


def clean_up_tokenization(text: str) -> str:
    """`transformers`' clean_up_tokenization_spaces: no space before punctuation and contractions."""
    return "".join(text[k] for k in _cleanup_kept(text))


_CLEANUP_CHARS = frozenset("".join(pattern for pattern, _ in _CLEANUPS))  # " .?!,'ntmsvre"


def _cleanup_kept(text: str) -> list[int]:
    """Positions in `text` that the clean-up keeps: each pattern's passes of str.replace, left to
    right without overlaps, deleting the pattern's spaces."""
    kept = list(range(len(text)))
    for pattern, deleted in _CLEANUPS:
        if pattern not in text:
            continue
        out_text, out_kept, i = [], [], 0
        while (j := text.find(pattern, i)) >= 0:
            out_text.append(text[i:j])
            out_kept += kept[i:j]
            for k in range(len(pattern)):
                if k not in deleted:
                    out_text.append(pattern[k])
                    out_kept.append(kept[j + k])
            i = j + len(pattern)
        out_text.append(text[i:])
        text, kept = "".join(out_text), out_kept + kept[i:]
    return kept


def _safe_end(text: str) -> bool:
    """Can text be cleaned now, whatever follows it? (`text` follows a cut, which never leaves a
    space or a quote just before a pattern character.) Its last character must be one no pattern
    holds, or a letter or digit no pattern continues from: "n" starts " n't" only after a space,
    "v" / "r" continue "'ve" / "'re" only after a quote."""
    last, before = text[-1], text[-2] if len(text) > 1 else ""
    if last not in _CLEANUP_CHARS:  # no pattern holds it: nothing after it can match through it
        return True
    if not last.isalnum():
        return False
    return not ((last == "n" and before == " ") or (last in "vr" and before == "'"))


def _safe_cut(text: str, a: int) -> bool:
    """Can the clean-up of text[:a] and of text[a:] be joined into that of the whole (0 < a < len)?
    The clean-up deletes spaces only, so the character before the cut stays and the one after it
    stays or, when it is a deleted space, gives way to one of . ? ! , ' n. No pattern has a letter
    or digit followed by a letter or digit but in "'ve" and "'re", nor by any of those but in "n't";
    and no match takes in a character that no pattern holds (an emoji, CJK, a digit)."""
    before, after = text[a - 1], text[a]
    if before not in _CLEANUP_CHARS or after not in _CLEANUP_CHARS:  # a character no pattern holds, never
        return True  # deleted (only spaces are): no match can take in both sides
    if not before.isalnum():
        return False
    if after.isalnum():
        return before + after not in ("ve", "re")
    return after == " " and before != "n"
