"""The few parts of SentencePiece's `ModelProto` we read and write, in protobuf's wire format.

`sentencepiece` loads and saves whole models but exposes neither piece types (user-defined vs
normal) nor a way to build a model from a vocabulary. GGUF stores a vocabulary (pieces, scores,
types), and our encoding of untrusted text needs a copy of a model with some pieces renamed, so we
edit the protobuf directly. Field numbers are those of sentencepiece_model.proto:

    ModelProto      1 pieces (repeated SentencePiece), 2 trainer_spec, 3 normalizer_spec
    SentencePiece   1 piece (string), 2 score (float), 3 type (enum, see PieceType)
    TrainerSpec     3 model_type (1 unigram, 2 bpe), 35 byte_fallback,
                    45 unk_piece, 46 bos_piece, 47 eos_piece, 48 pad_piece
    NormalizerSpec  1 name, 3 add_dummy_prefix, 4 remove_extra_whitespaces, 5 escape_whitespaces
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from nemotron.errors import TokenizerError


class PieceType(IntEnum):
    """SentencePiece's piece types; GGUF's `tokenizer.ggml.token_type` uses the same numbers."""

    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


@dataclass(frozen=True, slots=True)
class Piece:
    text: str
    score: float
    type: PieceType


def read_pieces(data: bytes) -> list[Piece]:
    """The vocabulary of a serialized ModelProto, in id order."""
    pieces = []
    for field, _, value in _fields(data):
        if field == 1:
            text, score, kind = "", 0.0, PieceType.NORMAL
            for sub, wire, sub_value in _fields(value):
                if sub == 1:
                    text = sub_value.decode("utf-8")
                elif sub == 2 and wire == 5:
                    score = struct.unpack("<f", sub_value)[0]
                elif sub == 3:
                    kind = PieceType(sub_value)
            pieces.append(Piece(text, score, kind))
    return pieces


def rename_pieces(data: bytes, renames: dict[int, str]) -> bytes:
    """A copy of the serialized model in which piece `id` is spelled `renames[id]`; every other
    byte is kept (normalizer, trainer spec, scores)."""
    out, index = bytearray(), 0
    for field, wire, value in _fields(data):
        if field == 1 and index in renames:
            kept = b"".join(_encode(sub, sub_wire, sub_value) for sub, sub_wire, sub_value in _fields(value)
                            if sub != 1)
            out += _encode(1, 2, _encode(1, 2, renames[index].encode("utf-8")) + kept)
        else:
            out += _encode(field, wire, value)
        index += field == 1
    return bytes(out)


def build_model(pieces: list[Piece], *, bpe: bool, add_dummy_prefix: bool,
                markers: dict[str, str]) -> bytes:
    """A serialized model from a vocabulary (as GGUF stores one). `markers` names the pieces of
    "unk", "bos", "eos" and "pad" (SentencePiece finds their ids by name); no text normalization."""
    out = bytearray()
    for piece in pieces:
        body = _encode(1, 2, piece.text.encode("utf-8")) + _encode(2, 5, struct.pack("<f", piece.score))
        out += _encode(1, 2, body + _encode(3, 0, int(piece.type)))
    trainer = _encode(3, 0, 2 if bpe else 1)
    trainer += _encode(35, 0, int(any(p.type == PieceType.BYTE for p in pieces)))
    for number, role in ((45, "unk"), (46, "bos"), (47, "eos"), (48, "pad")):
        trainer += _encode(number, 2, markers.get(role, f"<no {role}>").encode("utf-8"))
    normalizer = (_encode(1, 2, b"identity") + _encode(3, 0, int(add_dummy_prefix)) + _encode(4, 0, 0)
                  + _encode(5, 0, 1))
    return bytes(out + _encode(2, 2, trainer) + _encode(3, 2, normalizer))


def add_dummy_prefix(data: bytes) -> bool:
    """The normalizer's add_dummy_prefix flag (protobuf default: true)."""
    for field, _, value in _fields(data):
        if field == 3:
            for sub, _, sub_value in _fields(value):
                if sub == 3:
                    return bool(sub_value)
    return True


def model_is_bpe(data: bytes) -> bool:
    for field, _, value in _fields(data):
        if field == 2:
            for sub, _, sub_value in _fields(value):
                if sub == 3:
                    return sub_value == 2
    return False  # protobuf default: unigram


# ----------------------------------------------------------------------------- wire format
def _fields(data: bytes):
    """(field number, wire type, value) for each field of one message; values of length-delimited
    fields are bytes, varints ints, fixed32/64 their raw bytes."""
    pos, end = 0, len(data)
    try:
        while pos < end:
            key, pos = _varint(data, pos)
            field, wire = key >> 3, key & 7
            if wire == 0:
                value, pos = _varint(data, pos)
            elif wire == 2:
                size, pos = _varint(data, pos)
                value, pos = data[pos:pos + size], pos + size
            elif wire in (1, 5):
                size = 8 if wire == 1 else 4
                value, pos = data[pos:pos + size], pos + size
            else:
                raise ValueError(f"wire type {wire}")
            if pos > end:
                raise ValueError("truncated")
            yield field, wire, value
    except (ValueError, IndexError) as e:
        raise TokenizerError(f"malformed SentencePiece model ({e})") from None


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _encode(field: int, wire: int, value: int | bytes) -> bytes:
    key = _varint_bytes(field << 3 | wire)
    if wire == 0:
        return key + _varint_bytes(value)
    if wire == 2:
        return key + _varint_bytes(len(value)) + value
    return key + value  # fixed32 / fixed64, already packed


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
