"""Encoding a chat prompt whose message contents may contain special-token text.

`<extra_id_1>` typed in a message must stay text: only the chat template may produce the control
token. SentencePiece matches its user-defined symbols anywhere in the text and `tokenizers` its added
tokens, so neither can be told "not here". Instead we keep a copy of the tokenizer in which every
special piece is spelled as a secret sentinel (same id, same type, same score); the template's
special tokens are written as sentinels, message contents as they are. The copy then tokenizes the
template exactly as the original does (the sentinel stands where the special token stood) and the
contents as ordinary text. A prompt whose contents hold no special-token text never comes here.
"""
from __future__ import annotations

import json
import re
import secrets
from typing import TYPE_CHECKING

import sentencepiece
import tokenizers

from nemotron.errors import TokenizerError
from nemotron.tokenizer import spm_proto

if TYPE_CHECKING:
    from nemotron.tokenizer.tokenizer import Tokenizer

# Pieces that are special by their spelling even where a file does not mark them (<extra_id_1>,
# <|endoftext|>, [INST]); SentencePiece's user-defined symbols and non-special added tokens included.
SPECIAL_LOOKING = re.compile(r"<[^<>\s]+>|\[[^\[\]\s]+\]")


class LiteralEncoder:
    """Encodes (text, is_template) parts; special tokens are parsed in template parts only."""

    def __init__(self, tok: Tokenizer) -> None:
        self._tok = tok
        nonce = secrets.token_hex(8)  # lowercase ASCII survives every normalizer; unguessable
        if tok._sp is not None:
            pieces = spm_proto.read_pieces(tok._raw)
            # Control pieces are never matched in text by SentencePiece; Tokenizer.encode splits them out.
            protected = {p.text: i for i, p in enumerate(pieces) if p.type == spm_proto.PieceType.CONTROL and p.text}
            renamed = {p.text: i for i, p in enumerate(pieces)
                       if p.type == spm_proto.PieceType.USER_DEFINED and SPECIAL_LOOKING.fullmatch(p.text)}
            self._sentinels = {text: f"qq{nonce}x{i}qq" for text, i in renamed.items()}
            self._sp = sentencepiece.SentencePieceProcessor()
            self._sp.LoadFromSerializedProto(spm_proto.rename_pieces(
                tok._raw, {i: self._sentinels[text] for text, i in renamed.items()}))
            protected.update(renamed)
            unknown = tok._sp.unk_id()
        else:
            spec = json.loads(tok._hf.to_str())
            protected = {t["content"]: t["id"] for t in spec.get("added_tokens", [])
                         if t.get("special") or SPECIAL_LOOKING.fullmatch(t["content"])}
            self._sentinels = {text: f"qq{nonce}x{i}qq" for text, i in protected.items()}
            unknown = _unknown_id(tok._hf, spec.get("model", {}))
            self._hf = tokenizers.Tokenizer.from_str(json.dumps(_renamed_spec(spec, self._sentinels)))
        # The unknown token stands for text the vocabulary cannot spell, contents included.
        self._protected_ids = frozenset(protected.values()) - {unknown}
        self._counted = {text for text, i in protected.items() if i in self._protected_ids}
        alternatives = sorted(protected, key=len, reverse=True)  # longest match first
        self.pattern = re.compile("|".join(map(re.escape, alternatives))) if alternatives else None
        renamed_alternatives = sorted(self._sentinels, key=len, reverse=True)
        self._rename = re.compile("|".join(map(re.escape, renamed_alternatives))) if renamed_alternatives else None

    def needed(self, parts: tuple[tuple[str, bool], ...]) -> bool:
        """Does any message content hold special-token text? (If not, plain encoding is exact.)"""
        return self.pattern is not None and any(self.pattern.search(text) for text, template in parts
                                                if not template)

    def encode(self, parts: tuple[tuple[str, bool], ...]) -> list[int]:
        ids = self._encode_sentencepiece(parts) if self._tok._sp is not None else self._encode_tokenizers(parts)
        expected = sum(m.group() in self._counted for text, template in parts if template
                       for m in self.pattern.finditer(text))
        if sum(i in self._protected_ids for i in ids) != expected:  # only if a content spelled a sentinel
            raise TokenizerError("message content could not be encoded as text")
        return ids

    def _sentinel_text(self, text: str) -> str:
        return self._rename.sub(lambda m: self._sentinels[m.group()], text) if self._rename else text

    def _encode_tokenizers(self, parts) -> list[int]:
        text = "".join(self._sentinel_text(t) if template else t for t, template in parts)
        return self._hf.encode(text, add_special_tokens=False).ids

    def _encode_sentencepiece(self, parts) -> list[int]:
        # As Tokenizer.encode: split at control pieces (template text only), each segment encoded alone.
        tok, ids, segment = self._tok, [], []
        for text, template in parts:
            chunks = tok._split_re.split(text) if template and tok._split_re is not None else [text]
            for k, chunk in enumerate(chunks):  # odd chunks are control pieces
                if k % 2:
                    if segment:
                        ids.extend(self._sp.encode("".join(segment)))
                    ids.append(tok._split_ids[chunk])
                    segment = []
                elif chunk:
                    segment.append(self._sentinel_text(chunk) if template else chunk)
        if segment:
            ids.extend(self._sp.encode("".join(segment)))
        return ids


def _unknown_id(hf: tokenizers.Tokenizer, model: dict) -> int | None:
    if isinstance(model.get("unk_id"), int):  # Unigram
        return model["unk_id"]
    return hf.token_to_id(model["unk_token"]) if isinstance(model.get("unk_token"), str) else None


def _renamed_spec(spec: dict, sentinels: dict[str, str]) -> dict:
    """A tokenizer.json in which the protected tokens are spelled as sentinels, in the added tokens
    and in the model's vocabulary (where merges that build them are dropped). The model's unknown
    token (WordPiece, WordLevel and BPE name it) keeps its name in the vocabulary, where the model
    looks it up for every word it cannot spell; its added token is renamed, so that its text in a
    message is text."""
    for token in spec.get("added_tokens", []):
        token["content"] = sentinels.get(token["content"], token["content"])
    model = spec.get("model", {})
    vocab = model.get("vocab")
    unknown = model.get("unk_token")
    if isinstance(vocab, dict):
        model["vocab"] = {piece if piece == unknown else sentinels.get(piece, piece): i for piece, i in vocab.items()}
    elif isinstance(vocab, list):  # Unigram: [piece, score] pairs
        model["vocab"] = [[sentinels.get(piece, piece), score] for piece, score in vocab]
    if isinstance(model.get("merges"), list):
        def kept(merge) -> bool:
            a, b = merge.split(" ", 1) if isinstance(merge, str) else merge
            return not {a, b, a + b} & sentinels.keys()
        model["merges"] = [m for m in model["merges"] if kept(m)]
    return spec
