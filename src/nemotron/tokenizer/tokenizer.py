"""The tokenizer of a checkpoint: a SentencePiece `tokenizer.model` (what Nemotron ships) or a
Hugging Face `tokenizer.json` (read with the `tokenizers` package).

Encoding is left to the library. Decoding is done here, piece by piece, by `Assembler`, which
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
from pathlib import Path

import sentencepiece
import tokenizers

from nemotron.errors import TokenizerError
from nemotron.tokenizer import spm_proto
from nemotron.tokenizer.chat import ChatPrompt
from nemotron.tokenizer.decode import (BOUNDARY, BYTE, CONTROL, TEXT, UNKNOWN, Assembler, CleanedAssembler, Rules,
                                       StreamDecoder, WindowAssembler, clean_up_tokenization, huggingface_rules,
                                       sentencepiece_rules)
from nemotron.tokenizer.literal import LiteralEncoder

_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_EXTRA_ID = re.compile(r"<extra_id_\d+>")


class Tokenizer:
    """Text <-> token ids for one checkpoint. Build it with `from_file`, `from_dir` or
    `from_sentencepiece_bytes`."""

    def __init__(self, *, sp: sentencepiece.SentencePieceProcessor | None = None,
                 hf: tokenizers.Tokenizer | None = None, raw: bytes, file_name: str,
                 rules: Rules, bos_id: int | None, eos_id: int | None, pad_id: int | None,
                 replacements: tuple[tuple[str, str], ...] = (), config: dict | None = None):
        self._sp, self._hf, self._raw, self._file_name = sp, hf, raw, file_name
        self._config = config or {}  # tokenizer_config.json (over special_tokens_map.json) it was read with
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
    def from_dir(cls, directory: str | Path, max_vocab: int | None = None) -> Tokenizer:
        """The directory's tokenizer.model (SentencePiece, exactly as NeMo encodes), or its
        tokenizer.json where there is no .model or where the .json has tokens the .model lacks (a
        fine-tune's added tokens: transformers reads the .json), as long as the model has embeddings
        for them (`max_vocab`) and the .json reads."""
        directory = Path(directory)
        model, spec = directory / "tokenizer.model", directory / "tokenizer.json"
        if model.is_file():
            tok = cls.from_file(model)
            size = _json_vocab_size(spec) if spec.is_file() else 0  # cheap: no second tokenizer in the usual case
            if tok.vocab_size < size <= (max_vocab or size):
                try:
                    return cls.from_file(spec)
                except TokenizerError:
                    pass  # the .model serves
            try:  # a chat template beside it travels along (a GGUF export carries it); markers stay the model's
                tok._config = _huggingface_config(directory)
            except TokenizerError:
                pass
            return tok
        if spec.is_file():
            return cls.from_file(spec)
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
        return cls(sp=sp, raw=bytes(data), file_name="tokenizer.model", rules=sentencepiece_rules(sp),
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
        rules, replacements = huggingface_rules(spec.get("decoder"), config, (spec.get("model") or {}).get("type"))
        bos, eos, pad = markers if markers is not None else _huggingface_markers(hf, config)
        # Make sure the markers and <extra_id_N> pieces written in text encode to their single ids.
        added = {t["content"] for t in spec.get("added_tokens", [])}
        specials = [p for p in hf.get_vocab(with_added_tokens=False)
                    if p not in added and (_EXTRA_ID.fullmatch(p) or p in ("<s>", "</s>", "<pad>"))]
        if specials:
            hf.add_special_tokens([tokenizers.AddedToken(p, normalized=False, special=True) for p in specials])
        return cls(hf=hf, raw=raw, file_name="tokenizer.json", rules=rules, bos_id=bos, eos_id=eos,
                   pad_id=pad, replacements=replacements, config=config)

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
    def chat_template(self) -> str | None:
        """The Jinja chat template of its tokenizer_config.json, if any (ours renders the Nemotron-4
        format whatever it says; a GGUF export carries it for llama.cpp)."""
        template = self._config.get("chat_template")
        if isinstance(template, list):  # transformers' named templates
            template = next((t.get("template") for t in template if isinstance(t, dict) and t.get("name") == "default"),
                            None)
        return template if isinstance(template, str) else None

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
            text = self._raw_library_decode([i for i in ids if not self._is_boundary(i)])
        else:
            assembler = Assembler(self)
            text = "".join([assembler.push(i) for i in ids]) + assembler.finish()
        return clean_up_tokenization(text) if self._rules.cleanup else text

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

    def _assembler(self, track_offsets: bool = False) -> Assembler | WindowAssembler | CleanedAssembler:
        assembler = (WindowAssembler if self._rules.library else Assembler)(self, track_offsets)
        return CleanedAssembler(assembler) if self._rules.cleanup else assembler

    def _is_boundary(self, token_id: int) -> bool:
        self._check_id(token_id)
        return token_id in self._boundary

    def _raw_library_decode(self, ids: list[int]) -> str:
        """The library decoder's text, before any clean-up of tokenization spaces."""
        return self._hf.decode(ids, skip_special_tokens=False)

    def _kind(self, token_id: int) -> tuple[int, object]:
        """(kind, value) of a piece for the assembler; cached because a vocabulary is 256k pieces."""
        found = self._kinds.get(token_id)
        if found is None:
            found = self._kinds[token_id] = self._classify(token_id)
        return found

    def _classify(self, token_id: int) -> tuple[int, object]:
        piece = self.id_to_piece(token_id)
        if token_id in self._boundary:
            return BOUNDARY, ""
        if self._sp is not None:
            if self._sp.is_byte(token_id):
                return BYTE, int(piece[3:5], 16)
            if self._sp.is_control(token_id):
                return CONTROL, piece
            if self._sp.is_unknown(token_id):
                return UNKNOWN, self._unk_surface
            return TEXT, piece
        for pattern, content in self._replacements:
            piece = piece.replace(pattern, content)
        byte = _BYTE_PIECE.fullmatch(piece) if self._rules.byte_fallback else None
        return (BYTE, int(byte.group(1), 16)) if byte else (TEXT, piece)

    # ----------------------------------------------------------------------------- save
    def save(self, directory: str | Path) -> Path:
        """Write the tokenizer file, unchanged, into `directory` (a tokenizer.json with a
        tokenizer_config.json, unless one is there: the one it was read with, chat template and all,
        naming its markers); returns its path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / self._file_name
        path.write_bytes(self._raw)
        config_path = directory / "tokenizer_config.json"
        if self._hf is not None and not config_path.exists():  # the markers and clean-up travel along
            config = {key: self.id_to_piece(i) for key, i in (("bos_token", self.bos_id), ("eos_token", self.eos_id),
                                                              ("pad_token", self.pad_id)) if i is not None}
            config_path.write_text(json.dumps({**self._config, **config,
                                               "clean_up_tokenization_spaces": self._rules.cleanup},
                                              indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        elif self._config and not config_path.exists():  # a SentencePiece model's config (chat template) as read
            config_path.write_text(json.dumps(self._config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    def __repr__(self) -> str:
        return f"Tokenizer({self._file_name}, vocab_size={self.vocab_size})"


def _json_vocab_size(path: Path) -> int:
    """The ids a tokenizer.json spans (its model's vocabulary and its added tokens); 0 if it does not read."""
    try:
        spec = json.loads(path.read_bytes())
        vocab = spec["model"]["vocab"]
        ids = list(vocab.values()) if isinstance(vocab, dict) else [len(vocab) - 1]
        ids += [t["id"] for t in spec.get("added_tokens") or []]
        return max(ids, default=-1) + 1
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return 0


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
