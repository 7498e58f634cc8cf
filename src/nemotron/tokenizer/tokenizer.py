"""The tokenizer of a checkpoint: a SentencePiece `tokenizer.model` (what Nemotron ships) or a
Hugging Face `tokenizer.json` (read with the `tokenizers` package).

Encoding is left to the library. Decoding is done here, piece by piece, by `_Assembler`, which
reproduces the library's own decode rules (leading-space stripping, byte-fallback pieces such as
`<0xE2>`). `decode`, `offsets` and the streaming `StreamDecoder` all run the same assembler, so
streamed text always adds up to exactly what `decode` returns.

Rules shared by both formats:
- Special tokens written in the text (`<extra_id_1>`, `</s>`, ...) encode to their single id, except
  inside the message contents of a rendered chat prompt (`ChatPrompt`), where they are text.
- Special tokens decode to their own text, so stop strings such as `<extra_id_1>` can be found in
  generated text; the sequence markers BOS, EOS and PAD decode to nothing, as SentencePiece and
  NeMo's server do (and the Hugging Face backend follows suit).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import sentencepiece
import tokenizers

from nemotron.errors import TokenizerError
from nemotron.tokenizer import spm_proto
from nemotron.tokenizer.chat import ChatPrompt
from nemotron.tokenizer.literal import LiteralEncoder

_SPACE = "\u2581"  # "▁", SentencePiece's whitespace symbol
_REPLACEMENT = "\ufffd"
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_EXTRA_ID = re.compile(r"<extra_id_\d+>")
# Tails of decoded text that transformers' clean-up could still rewrite once more text follows,
# by length: any n-character suffix in the set of pattern prefixes of length n.
_CLEANUP_PREFIXES = ((" ",), (" '", " n"), (" n'", " 'v", " 'r"))

# Piece kinds as the assembler sees them.
_TEXT, _BYTE, _UNKNOWN, _CONTROL, _BOUNDARY = range(5)


@dataclass(frozen=True, slots=True)
class _Rules:
    """How a backend's decoder turns pieces into text (see `_Assembler`)."""

    sentencepiece: bool
    # SentencePiece's leading "▁" rule: "none", "once" (add_dummy_prefix), "all" (remove_extra_whitespaces)
    sp_strip: str = "none"
    byte_fallback: bool = False  # HF `ByteFallback`: a run of <0xNN> pieces that is not UTF-8 -> U+FFFD each
    strip_chars: tuple[str, int] = ("", 0)  # HF `Strip` after `Fuse`: drop up to n leading chars of the text
    metaspace: str = ""  # HF `Metaspace` decoder: its replacement char
    metaspace_first: bool = False  # ... dropped altogether from the first token
    library: bool = False  # any other decoder: the `tokenizers` library decodes (`_WindowAssembler`)
    cleanup: bool = False  # ... followed by transformers' clean_up_tokenization


class Tokenizer:
    """Text <-> token ids for one checkpoint. Build it with `from_file`, `from_dir` or
    `from_sentencepiece_bytes`."""

    def __init__(self, *, sp: sentencepiece.SentencePieceProcessor | None = None,
                 hf: tokenizers.Tokenizer | None = None, raw: bytes, file_name: str,
                 rules: _Rules, bos_id: int | None, eos_id: int | None, pad_id: int | None,
                 replacements: tuple[tuple[str, str], ...] = ()):
        self._sp, self._hf, self._raw, self._file_name = sp, hf, raw, file_name
        self._rules, self._replacements = rules, replacements
        self.bos_id, self.eos_id, self.pad_id = bos_id, eos_id, pad_id
        self.vocab_size = sp.get_piece_size() if sp is not None else hf.get_vocab_size(with_added_tokens=True)
        self._boundary = frozenset(i for i in (bos_id, eos_id, pad_id) if i is not None)
        self._kinds: dict[int, tuple[int, object]] = {}
        self._split_ids: dict[str, int] = {}
        self._split_re: re.Pattern[str] | None = None
        self._unk_surface = ""
        self._literal_encoder: LiteralEncoder | None = None
        if sp is not None:
            self._init_sentencepiece(sp)

    # ----------------------------------------------------------------------------- loading
    @classmethod
    def from_file(cls, path: str | Path) -> Tokenizer:
        """A `tokenizer.json` is read with `tokenizers`; any other file as a SentencePiece model."""
        path = Path(path)
        if path.is_dir():
            return cls.from_dir(path)
        if not path.is_file():
            raise TokenizerError(f"tokenizer file {path} does not exist")
        if path.suffix == ".json":
            return cls._from_tokenizer_json(path)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise TokenizerError(f"cannot read tokenizer file {path}: {e.strerror}") from e
        return cls.from_sentencepiece_bytes(data, source=str(path))

    @classmethod
    def from_dir(cls, directory: str | Path) -> Tokenizer:
        directory = Path(directory)
        for name in ("tokenizer.model", "tokenizer.json"):
            if (directory / name).is_file():
                return cls.from_file(directory / name)
        raise TokenizerError(f"{directory} holds neither tokenizer.model nor tokenizer.json")

    @classmethod
    def from_sentencepiece_bytes(cls, data: bytes, source: str = "SentencePiece model") -> Tokenizer:
        sp = sentencepiece.SentencePieceProcessor()
        try:
            sp.LoadFromSerializedProto(data)
        except (RuntimeError, OSError, TypeError) as e:
            raise TokenizerError(f"{source} is not a valid SentencePiece model ({e})") from e
        ids = [f() for f in (sp.bos_id, sp.eos_id, sp.pad_id)]
        bos, eos, pad = (i if i >= 0 else None for i in ids)
        return cls(sp=sp, raw=bytes(data), file_name="tokenizer.model", rules=_sentencepiece_rules(sp),
                   bos_id=bos, eos_id=eos, pad_id=pad)

    @classmethod
    def _from_tokenizer_json(cls, path: Path) -> Tokenizer:
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise TokenizerError(f"cannot read tokenizer file {path}: {e}") from e
        return cls.from_tokenizer_json_bytes(raw, source=str(path), config_dir=path.parent)

    @classmethod
    def from_tokenizer_json_bytes(cls, raw: bytes, source: str = "tokenizer.json", config_dir: Path | None = None,
                                  markers: tuple[int | None, int | None, int | None] | None = None) -> Tokenizer:
        """A Hugging Face tokenizer.json; BOS/EOS/PAD from `markers`, else from the tokenizer_config.json
        or special_tokens_map.json in `config_dir`, else the usual SentencePiece names."""
        try:
            spec = json.loads(raw)
        except ValueError as e:
            raise TokenizerError(f"cannot read tokenizer file {source}: {e}") from e
        try:
            hf = tokenizers.Tokenizer.from_str(raw.decode("utf-8"))
        except Exception as e:  # tokenizers reports a malformed file as a bare Exception
            raise TokenizerError(f"{source} is not a valid tokenizer.json ({e})") from e
        config = _huggingface_config(config_dir)
        rules, replacements = _huggingface_rules(spec.get("decoder"), config, (spec.get("model") or {}).get("type"))
        bos, eos, pad = markers if markers is not None else _huggingface_markers(hf, config)
        # Make sure the markers and <extra_id_N> pieces written in text encode to their single ids.
        added = {t["content"] for t in spec.get("added_tokens", [])}
        specials = [p for p in hf.get_vocab(with_added_tokens=False)
                    if p not in added and (_EXTRA_ID.fullmatch(p) or p in ("<s>", "</s>", "<pad>"))]
        if specials:
            hf.add_special_tokens([tokenizers.AddedToken(p, normalized=False, special=True) for p in specials])
        return cls(hf=hf, raw=raw, file_name="tokenizer.json", rules=rules, bos_id=bos, eos_id=eos,
                   pad_id=pad, replacements=replacements)

    def _init_sentencepiece(self, sp: sentencepiece.SentencePieceProcessor) -> None:
        # SentencePiece parses user-defined symbols out of text itself but never control symbols
        # (<s>, </s>, and <extra_id_N> in models that declare them as control), so we split on those.
        # The segments between them are encoded separately, as NeMo's SentencePieceTokenizer does
        # (legacy mode, `text_to_ids`): each segment gets SentencePiece's dummy prefix. The
        # assembler mirrors this when decoding (a control piece starts a new segment), so that
        # decode(encode(text)) == text.
        controls = {sp.id_to_piece(i): i for i in range(self.vocab_size) if sp.is_control(i)}
        self._split_ids = {p: i for p, i in controls.items() if p}
        if self._split_ids:
            alternatives = sorted(self._split_ids, key=len, reverse=True)  # longest match wins
            self._split_re = re.compile("(" + "|".join(map(re.escape, alternatives)) + ")")
        if sp.unk_id() >= 0:
            self._unk_surface = sp.decode([sp.unk_id()])

    # ----------------------------------------------------------------------------- vocabulary
    def token_to_id(self, piece: str) -> int | None:
        if self._hf is not None:
            return self._hf.token_to_id(piece)
        i = self._sp.piece_to_id(piece)
        return None if i == self._sp.unk_id() and piece != self._sp.id_to_piece(i) else i

    def id_to_piece(self, token_id: int) -> str:
        self._check_id(token_id)
        return self._sp.id_to_piece(token_id) if self._sp is not None else self._hf.id_to_token(token_id)

    def token_strings(self, ids: list[int]) -> list[str]:
        """The vocabulary piece of each id (`▁Hello`, `<0xE2>`), as NeMo's /generate returns `tokens`."""
        return [self.id_to_piece(i) for i in ids]

    def vocabulary(self) -> list[str]:
        """Every piece, in id order."""
        return [self.id_to_piece(i) for i in range(self.vocab_size)]

    @property
    def sentencepiece_model(self) -> bytes | None:
        """The serialized SentencePiece model, if this tokenizer is one."""
        return self._raw if self._sp is not None else None

    @property
    def tokenizer_json(self) -> bytes | None:
        """The tokenizer.json text, if this tokenizer is one."""
        return self._raw if self._hf is not None else None

    @property
    def adds_dummy_prefix(self) -> bool:
        """Does encoding put a space in front of the text (SentencePiece's add_dummy_prefix)?"""
        return self._sp is not None and spm_proto.add_dummy_prefix(self._raw)

    def _check_id(self, token_id: int) -> None:
        if not 0 <= token_id < self.vocab_size:
            raise TokenizerError(f"token id {token_id} is outside the vocabulary (size {self.vocab_size})")

    # ----------------------------------------------------------------------------- encode
    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        """Ids of `text`. Special tokens written in the text become their ids, except in the
        message contents of a `ChatPrompt` (what `render_chat` returns), where they stay text."""
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:  # lone surrogates: the libraries would fail deep inside
            raise TokenizerError(f"text is not valid Unicode at position {err.start} ({err.reason})") from None
        ids: list[int] = []
        if add_bos:
            if self.bos_id is None:
                raise TokenizerError("this tokenizer has no BOS token; encode without add_bos")
            ids.append(self.bos_id)
        if isinstance(text, ChatPrompt) and self._literal().needed(text.parts):
            return ids + self._literal().encode(text.parts)
        if self._hf is not None:
            return ids + self._hf.encode(text, add_special_tokens=False).ids
        if self._split_re is None:
            return ids + self._sp.encode(text)
        for k, part in enumerate(self._split_re.split(text)):  # odd parts are the special tokens
            if k % 2:
                ids.append(self._split_ids[part])
            elif part:
                ids.extend(self._sp.encode(part))
        return ids

    def _literal(self) -> LiteralEncoder:
        if self._literal_encoder is None:
            self._literal_encoder = LiteralEncoder(self)
        return self._literal_encoder

    # ----------------------------------------------------------------------------- decode
    def decode(self, ids: list[int]) -> str:
        if self._rules.library:
            return self._library_decode([i for i in ids if not self._is_boundary(i)])
        assembler = _Assembler(self)
        return "".join([assembler.push(i) for i in ids]) + assembler.finish()

    def offsets(self, ids: list[int]) -> list[int]:
        """Character offset in `decode(ids)` where each token's text starts (tokens without text:
        where they stand). Unlike NeMo, which sums piece lengths, these index the decoded text."""
        assembler = self._assembler(track_offsets=True)
        for i in ids:
            assembler.push(i)
        assembler.finish()
        return assembler.offsets

    def stream_decoder(self, prompt_ids: list[int] | None = None) -> StreamDecoder:
        return StreamDecoder(self, prompt_ids)

    def _assembler(self, track_offsets: bool = False) -> _Assembler | _WindowAssembler:
        return (_WindowAssembler if self._rules.library else _Assembler)(self, track_offsets)

    def _is_boundary(self, token_id: int) -> bool:
        self._check_id(token_id)
        return token_id in self._boundary

    def _library_decode(self, ids: list[int]) -> str:
        text = self._hf.decode(ids, skip_special_tokens=False)
        return clean_up_tokenization(text) if self._rules.cleanup else text

    def _kind(self, token_id: int) -> tuple[int, object]:
        """(kind, value) of a piece for the assembler; cached because a vocabulary is 256k pieces."""
        found = self._kinds.get(token_id)
        if found is None:
            found = self._kinds[token_id] = self._classify(token_id)
        return found

    def _classify(self, token_id: int) -> tuple[int, object]:
        piece = self.id_to_piece(token_id)
        if token_id in self._boundary:
            return _BOUNDARY, ""
        if self._sp is not None:
            if self._sp.is_byte(token_id):
                return _BYTE, int(piece[3:5], 16)
            if self._sp.is_control(token_id):
                return _CONTROL, piece
            if self._sp.is_unknown(token_id):
                return _UNKNOWN, self._unk_surface
            return _TEXT, piece
        for pattern, content in self._replacements:
            piece = piece.replace(pattern, content)
        byte = _BYTE_PIECE.fullmatch(piece) if self._rules.byte_fallback else None
        return (_BYTE, int(byte.group(1), 16)) if byte else (_TEXT, piece)

    # ----------------------------------------------------------------------------- save
    def save(self, directory: str | Path) -> Path:
        """Write the tokenizer file, unchanged, into `directory` (a tokenizer.json with a
        tokenizer_config.json naming its markers, unless one is there); returns its path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / self._file_name
        path.write_bytes(self._raw)
        config_path = directory / "tokenizer_config.json"
        if self._hf is not None and not config_path.exists():  # the markers and clean-up travel along
            config = {key: self.id_to_piece(i) for key, i in (("bos_token", self.bos_id), ("eos_token", self.eos_id),
                                                              ("pad_token", self.pad_id)) if i is not None}
            config_path.write_text(json.dumps({**config, "clean_up_tokenization_spaces": self._rules.cleanup},
                                              indent=2) + "\n")
        return path

    def __repr__(self) -> str:
        return f"Tokenizer({self._file_name}, vocab_size={self.vocab_size})"


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


class _WindowAssembler:
    """Ids -> text through the `tokenizers` library's own decoder, for the decoders `_Assembler`
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


class _Assembler:
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
        if kind == _BYTE:
            self._run.append((value, index))
            return self._drain(final=False)
        if kind == _BOUNDARY and not self._rules.sentencepiece:
            # Dropped before decoding, as SentencePiece drops it; a byte run goes on across it.
            if self._run:
                self._run.append((None, index))
            return ""
        out = self._drain(final=True)
        if self._track:
            self.offsets[index] = self.length
        text = self._piece_text(kind, value)
        out += self._emit(text, [(index, 0)])
        if kind in (_CONTROL, _BOUNDARY):  # a control piece ends a segment (see _init_sentencepiece)
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
        if kind == _BOUNDARY:
            return ""
        if kind != _TEXT:  # control pieces show their own text; unknown ones the unk surface
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


def _sentencepiece_rules(sp: sentencepiece.SentencePieceProcessor) -> _Rules:
    # Decode strips the first piece's leading "▁" when the model adds a dummy prefix, and every
    # leading one when it removes extra whitespace. Both flags live in the model's normalizer
    # spec; reading them back through decode avoids parsing the protobuf by hand.
    space = sp.piece_to_id(_SPACE)
    if space == sp.unk_id() or sp.is_control(space) or sp.is_byte(space):
        return _Rules(sentencepiece=True, sp_strip="once")  # the usual setting; cannot probe it
    kept = len(sp.decode([space, space]))
    return _Rules(sentencepiece=True, sp_strip={2: "none", 1: "once"}.get(kept, "all"))


def _huggingface_config(directory: Path | None) -> dict:
    """special_tokens_map.json overlaid with tokenizer_config.json, where they exist."""
    merged: dict = {}
    for config_name in ("special_tokens_map.json", "tokenizer_config.json"):
        config_path = directory / config_name if directory is not None else None
        if config_path is None or not config_path.is_file():
            continue
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise TokenizerError(f"cannot read {config_path}: {e}") from e
        if not isinstance(config, dict):
            raise TokenizerError(f"{config_path} is not a JSON object")
        merged.update(config)
    return merged


def _huggingface_rules(decoder: dict | None, config: dict,
                       model_type: str | None) -> tuple[_Rules, tuple[tuple[str, str], ...]]:
    """The SentencePiece-style decoders `transformers` writes for Llama-like tokenizers are modelled
    piece by piece (`_Assembler`); every other decoder runs in the library (`_WindowAssembler`), as
    does any tokenizer whose config asks for `transformers`' clean-up of tokenization spaces (which
    transformers skips for BPE models unless told otherwise)."""
    cleanup = bool(config.get("clean_up_tokenization_spaces")) and (
        model_type != "BPE" or bool(config.get("clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output")))
    library = _Rules(sentencepiece=False, library=True, cleanup=cleanup)
    kind = decoder.get("type") if decoder else "none"
    if library.cleanup:
        return library, ()
    if kind == "Metaspace":
        scheme = decoder.get("prepend_scheme", "always" if decoder.get("add_prefix_space", True) else "never")
        return _Rules(sentencepiece=False, metaspace=decoder.get("replacement", _SPACE),
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
    return _Rules(sentencepiece=False, byte_fallback="ByteFallback" in names, strip_chars=strip), \
        tuple(replacements)


def _huggingface_markers(hf: tokenizers.Tokenizer, config: dict) -> tuple[int | None, ...]:
    """BOS, EOS and PAD ids: from tokenizer_config.json / special_tokens_map.json when present,
    else the usual SentencePiece names."""
    names = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}
    for key in names:
        value = config.get(key)
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            names[key] = value
    return tuple(hf.token_to_id(names[key]) for key in ("bos_token", "eos_token", "pad_token"))


_CLEANUPS = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
             (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def clean_up_tokenization(text: str) -> str:
    """`transformers`' clean_up_tokenization_spaces: no space before punctuation and contractions."""
    for before, after in _CLEANUPS:
        text = text.replace(before, after)
    return text
