"""GGUF, llama.cpp's single-file format, for its `nemotron` architecture: written by
`nemotron convert MODEL OUT --to gguf`, read wherever a model path is accepted.

The conventions are llama.cpp's (convert_hf_to_gguf.py `NemotronModel`, llama-model.cpp):
- tensors `token_embd`, `blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm, ffn_up,
  ffn_down}`, `output_norm`, `output`; the norms carry a `.weight` and a `.bias`;
- LayerNorm1p weights are stored with the 1 already added (llama.cpp runs a plain LayerNorm), so
  reading subtracts it again;
- rotary embedding of the NEOX (split halves) kind over `nemotron.rope.dimension_count` channels;
  the head size in `attention.key_length` / `value_length`;
- llama.cpp sizes the query and output projections as hidden x hidden, so it loads only models
  whose heads x head size equals the hidden size (not Minitron-8B's 48 x 128 on 4096); we write and
  read such files all the same, and say so;
- 1-D tensors (norms) stay float32 in every file type, and a matrix whose rows do not split into
  32-element blocks falls back to float16, as llama.cpp's own converter does.
The tokenizer goes in as llama.cpp's vocabulary (`llama`: SentencePiece pieces, scores and types;
`gpt2`: byte-level BPE tokens and merges) and, for an exact round trip, as the original file.
"""
from __future__ import annotations

import base64
import json
import math
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nemotron.errors import CheckpointError, TokenizerError
from nemotron.model.config import ModelConfig
from nemotron.tokenizer import Tokenizer
from nemotron.tokenizer.spm_proto import Piece, PieceType, build_model, read_pieces

ARCH = "nemotron"
MAGIC = b"GGUF"
BLOCK = 32  # elements per block of every quantized type written here
# Our original tokenizer file, kept beside llama.cpp's vocabulary for an exact round trip.
SENTENCEPIECE_KEY = "nemotron.tokenizer.sentencepiece_model_base64"  # a string: one part, fast both ways
HF_JSON_KEY = "tokenizer.huggingface.json"
# llama.cpp takes a pre-tokenized word that is itself a token whole for these (tokenizers: ignore_merges).
IGNORE_MERGES = ("llama-bpe", "tekken")
# Byte-level BPE pre-tokenizer patterns and llama.cpp's names for them (`tokenizer.ggml.pre`).
# None: GPT-2's own, built into the ByteLevel pre-tokenizer (use_regex).
PRE_TOKENIZERS = {
    "gpt-2": None,
    "llama-bpe": (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+"),
    "tekken": (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?"
               r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+"),
}


TURN_MARKER = "<extra_id_1>"
# nemotron.tokenizer.render_chat as Jinja (llama.cpp and llama-cpp-python render `tokenizer.chat_template`):
# an optional system turn (empty when absent), then User / Assistant turns, each ending in a newline.
NEMOTRON_CHAT_TEMPLATE = (
    "{% set system = messages[0]['content'] if messages and messages[0]['role'] == 'system' else '' %}"
    "<extra_id_0>System\n{{ system }}\n"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}<extra_id_1>User\n{{ message['content'] }}\n"
    "{% elif message['role'] == 'assistant' %}<extra_id_1>Assistant\n{{ message['content'] }}\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<extra_id_1>Assistant\n{% endif %}")


def _gguf():
    try:
        import gguf
    except ImportError as e:  # a dependency, but give a clear message if someone removed it
        raise CheckpointError("reading or writing GGUF files needs the `gguf` package (pip install gguf)") from e
    return gguf


def file_types() -> dict[str, tuple[int, int]]:
    """--to gguf --gguf-type NAME -> (GGML type of the matrices, llama.cpp file type)."""
    g = _gguf()
    q, f = g.GGMLQuantizationType, g.LlamaFileType
    return {"f32": (q.F32, f.ALL_F32), "f16": (q.F16, f.MOSTLY_F16), "q8_0": (q.Q8_0, f.MOSTLY_Q8_0),
            "q4_0": (q.Q4_0, f.MOSTLY_Q4_0)}


FILE_TYPES = ("f32", "f16", "q8_0", "q4_0")


def is_gguf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == MAGIC
    except OSError:
        return False


# ----------------------------------------------------------------------------- names
def _layer_names(i: int) -> dict[str, str]:
    hf, gg = f"model.layers.{i}.", f"blk.{i}."
    return {hf + "input_layernorm.weight": gg + "attn_norm.weight", hf + "input_layernorm.bias": gg + "attn_norm.bias",
            hf + "self_attn.q_proj.weight": gg + "attn_q.weight", hf + "self_attn.k_proj.weight": gg + "attn_k.weight",
            hf + "self_attn.v_proj.weight": gg + "attn_v.weight",
            hf + "self_attn.o_proj.weight": gg + "attn_output.weight",
            hf + "post_attention_layernorm.weight": gg + "ffn_norm.weight",
            hf + "post_attention_layernorm.bias": gg + "ffn_norm.bias",
            hf + "mlp.up_proj.weight": gg + "ffn_up.weight", hf + "mlp.down_proj.weight": gg + "ffn_down.weight"}


def tensor_names(num_layers: int) -> dict[str, str]:
    """Hugging Face name -> GGUF name, in the order llama.cpp's converter writes them."""
    names = {"model.embed_tokens.weight": "token_embd.weight"}
    for i in range(num_layers):
        names.update(_layer_names(i))
    names.update({"model.norm.weight": "output_norm.weight", "model.norm.bias": "output_norm.bias",
                  "lm_head.weight": "output.weight"})
    return names


def _is_norm_weight(hf_name: str) -> bool:
    return hf_name.endswith(("layernorm.weight", "model.norm.weight"))


# ----------------------------------------------------------------------------- writing
def write_gguf(tensors: Mapping[str, torch.Tensor], config: ModelConfig, tokenizer: Tokenizer | None,
               path: str | Path, file_type: str = "f16", embed_tokenizer: bool = True) -> Path:
    """Write a model (Hugging Face tensor names) as a GGUF file llama.cpp loads. `file_type`: f32,
    f16, q8_0 or q4_0 (q4_0 keeps the output layer in q8_0, the layer most sensitive to error).
    `embed_tokenizer` keeps the original tokenizer file beside llama.cpp's vocabulary, so that
    reading the GGUF back gives exactly the same tokenizer (normalization rules included)."""
    g = _gguf()
    if file_type not in FILE_TYPES:
        raise CheckpointError(f"unknown GGUF type {file_type!r}; choose one of {', '.join(FILE_TYPES)}")
    if config.is_reward_model:
        raise CheckpointError("a reward model has no place in llama.cpp's nemotron architecture (no rm_head); "
                              "only language models convert to GGUF")
    if config.quantization is not None:
        raise CheckpointError(f"the checkpoint is quantized ({config.quantization}); convert the unquantized one")
    if config.num_heads * config.head_dim != config.hidden_size:
        print(f"WARNING: {config.num_heads} heads x {config.head_dim} != hidden size {config.hidden_size}: "
              "llama.cpp's nemotron architecture cannot load this GGUF (nemotron can)", file=sys.stderr)
    matrix_type, llama_file_type = file_types()[file_type]
    names = tensor_names(config.num_layers)
    missing = [n for n in names if n not in tensors]
    if missing:
        raise CheckpointError(f"cannot write GGUF: missing tensor(s) {', '.join(missing[:3])}")
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory; a GGUF is one file (name it, e.g. {path / 'model.gguf'})")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")  # renamed once complete: no half-written model
    writer = g.GGUFWriter(str(partial), ARCH)
    try:
        _write_config(writer, config, llama_file_type)
        if tokenizer is not None:
            _write_tokenizer(writer, tokenizer, config.vocab_size, embed_tokenizer)
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        raise

    plan = []
    for hf_name, gguf_name in names.items():
        tensor = tensors[hf_name]
        qtype = g.GGMLQuantizationType.F32 if tensor.dim() == 1 else matrix_type
        if file_type == "q4_0" and hf_name == "lm_head.weight":
            qtype = g.GGMLQuantizationType.Q8_0
        if qtype not in (g.GGMLQuantizationType.F32, g.GGMLQuantizationType.F16) and tensor.shape[-1] % BLOCK:
            qtype = g.GGMLQuantizationType.F16
        plan.append((hf_name, gguf_name, qtype))
        shape = tuple(tensor.shape)
        if qtype in (g.GGMLQuantizationType.F32, g.GGMLQuantizationType.F16):
            dtype = np.float32 if qtype == g.GGMLQuantizationType.F32 else np.float16
            writer.add_tensor_info(gguf_name, shape, np.dtype(dtype), tensor.numel() * np.dtype(dtype).itemsize)
        else:
            byte_shape = g.quant_shape_to_byte_shape(shape, qtype)
            writer.add_tensor_info(gguf_name, byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape)), qtype)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for hf_name, _, qtype in plan:  # one tensor in memory at a time
            data = tensors[hf_name].detach().to("cpu", torch.float32)
            if _is_norm_weight(hf_name):
                data = data + 1.0  # LayerNorm1p: llama.cpp applies the stored weight as is
            writer.write_tensor_data(g.quants.quantize(data.numpy(), qtype))
        writer.close()
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        raise
    partial.replace(path)
    return path


def _write_config(writer, config: ModelConfig, llama_file_type: int) -> None:
    writer.add_name("nemotron")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_block_count(config.num_layers)
    writer.add_head_count(config.num_heads)
    writer.add_head_count_kv(config.num_kv_heads)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_layer_norm_eps(config.norm_eps)
    writer.add_rope_dimension_count(config.rotary_dim)
    writer.add_rope_freq_base(config.rope_theta)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(llama_file_type)


def _write_tokenizer(writer, tokenizer: Tokenizer, vocab_size: int, embed: bool) -> None:
    if tokenizer.vocab_size > vocab_size:
        raise CheckpointError(f"the tokenizer has {tokenizer.vocab_size} pieces but the model only {vocab_size} "
                              "embedding rows")
    # llama.cpp sizes the embedding by the token list: pad it to the model's rows, as its converter does.
    padding = [f"[PAD{i}]" for i in range(tokenizer.vocab_size, vocab_size)]
    unused = [int(PieceType.UNUSED)] * len(padding)
    if tokenizer.sentencepiece_model is not None:
        data = tokenizer.sentencepiece_model
        pieces = read_pieces(data)
        writer.add_tokenizer_model("llama")
        writer.add_token_list([p.text for p in pieces] + padding)
        writer.add_token_scores([p.score for p in pieces] + [0.0] * len(padding))
        writer.add_token_types([int(_llama_cpp_type(p)) for p in pieces] + unused)
        writer.add_add_space_prefix(tokenizer.adds_dummy_prefix)
        if embed:
            writer.add_string(SENTENCEPIECE_KEY, base64.b64encode(data).decode("ascii"))
        unk = next((i for i, p in enumerate(pieces) if p.type == PieceType.UNKNOWN), None)
        if unk is not None:
            writer.add_unk_token_id(unk)
    else:
        spec = json.loads(tokenizer.tokenizer_json)
        model = spec.get("model", {})
        vocab = tokenizer.vocabulary()
        added = {t["id"]: t for t in spec.get("added_tokens", [])}
        types = [int(PieceType.CONTROL if added[i]["special"] else PieceType.USER_DEFINED) if i in added
                 else int(PieceType.NORMAL) for i in range(len(vocab))]
        if model.get("type") == "BPE" and model.get("byte_fallback"):
            raise CheckpointError("a SentencePiece-style BPE tokenizer.json (byte fallback) has no faithful llama.cpp "
                                  "vocabulary; convert with the model's tokenizer.model beside it instead")
        if model.get("type") == "BPE":
            merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
            writer.add_tokenizer_model("gpt2")
            writer.add_tokenizer_pre(_pre_tokenizer_name(spec.get("pre_tokenizer")))
            writer.add_token_merges(merges)
        elif model.get("type") == "Unigram":
            writer.add_tokenizer_model("llama")
            scores = {piece: score for piece, score in model["vocab"]}
            writer.add_token_scores([float(scores.get(p, 0.0)) for p in vocab] + [0.0] * len(padding))
            for i, piece in enumerate(vocab):  # llama.cpp's SentencePiece tokenizer needs these types
                if i == model.get("unk_id"):
                    types[i] = int(PieceType.UNKNOWN)
                elif model.get("byte_fallback") and re.fullmatch(r"<0x[0-9A-F]{2}>", piece):
                    types[i] = int(PieceType.BYTE)
        else:
            raise CheckpointError(f"llama.cpp has no vocabulary kind for a {model.get('type')} tokenizer.json; "
                                  "GGUF export supports SentencePiece, BPE and Unigram tokenizers")
        writer.add_token_list(vocab + padding)
        writer.add_token_types(types + unused)
        if embed:
            writer.add_string(HF_JSON_KEY, tokenizer.tokenizer_json.decode("utf-8"))
    for role, token_id in (("bos", tokenizer.bos_id), ("eos", tokenizer.eos_id), ("pad", tokenizer.pad_id)):
        if token_id is not None:
            getattr(writer, f"add_{role}_token_id")(token_id)
    writer.add_add_bos_token(False)  # NeMo's server and ours add no BOS unless asked (add_BOS)
    # Chat: the tokenizer's own template where its config has one, else the Nemotron-4 format where the
    # vocabulary has its markers; a template whose turns end at <extra_id_1> makes that the end-of-turn
    # token (llama.cpp stops at it as at EOS).
    turn_end = tokenizer.token_to_id(TURN_MARKER)
    template = tokenizer.chat_template or (NEMOTRON_CHAT_TEMPLATE if turn_end is not None else None)
    if template is not None:
        writer.add_chat_template(template)
    if turn_end is not None and template is not None and TURN_MARKER in template:
        writer.add_eot_token_id(turn_end)


def _llama_cpp_type(piece: Piece) -> PieceType:
    """The piece's type as llama.cpp should see it. A one-character user-defined piece (SentencePiece
    keeps "\n" whole that way) goes in as NORMAL: llama.cpp splits text at user-defined pieces like at
    control tokens and then puts the dummy-prefix space in front of the next part, which SentencePiece
    does not ("Max.\nOne" became "\n", "▁One" instead of "\n", "One"); as a normal single-character
    piece it is still found whole."""
    if piece.type == PieceType.USER_DEFINED and len(piece.text) == 1:
        return PieceType.NORMAL
    return piece.type


# ----------------------------------------------------------------------------- reading
@dataclass(slots=True)
class GgufCheckpoint:
    config: ModelConfig  # quantization "int4" when the decoder layers' Q4_0 blocks are kept (keep_q4_0)
    tokenizer: Tokenizer | None
    tensors: Iterator[tuple[str, torch.Tensor]]  # Hugging Face names, dequantized to float32 (or int4 pieces)
    quantized_layout: dict[str, int] | None = None  # the int4 modules' options (nemotron.quant.Int4Linear)
    tokenizer_error: str | None = None  # why the file's vocabulary gives no tokenizer (--tokenizer may stand in)


Q4_0_BYTES = 18  # a Q4_0 block: float16 scale d, then 16 bytes of nibbles (element j low, j + 16 high)
DECODER_MATRICES = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_up", "ffn_down")


def read_gguf(path: str | Path, keep_q4_0: bool = False, dtype: torch.dtype | None = torch.float32) -> GgufCheckpoint:
    """A GGUF file of the `nemotron` architecture: its configuration, its tokenizer and its
    tensors (read lazily from the memory-mapped file, dequantized one at a time).

    `keep_q4_0`: when every decoder-layer matrix is Q4_0, they stay 4-bit as int4 modules with
    groups of 32 (`X.weight_packed`, `X.weight_scale`: the blocks' bytes and scales as stored, so
    w = d (q - 8) exactly as llama.cpp computes it) and the config says quantization "int4"; the
    embedding and norms are dequantized, and so is the output layer, which then goes to int8 with one
    scale per vocabulary row (our LM head under every scheme, nemotron.quant) when the file stores it
    quantized (llama.cpp writes Q6_K or Q8_0 there): dequantized to 16 bits it would be read at twice
    its stored size, about half of a Q4_0 Nemotron-Mini's step; re-rounding it costs an error of at
    most 1/254 of its row's largest weight. A float output layer stays float. Anything else (Q8_0,
    Q4_1, K-quants, a mix) is dequantized throughout: Q8_0's per-block scales do not fit per-channel
    int8 without rounding again (`nemotron quantize model.gguf DIR --scheme int8` does that, knowingly).
    Float tensors come in `dtype` (None: the file's, config.torch_dtype), a band of rows at a time, so
    that a 256k-vocabulary embedding never exists in float32 beside the model's copy."""
    reader = _open(path)
    meta = _Metadata(reader, path)
    config = _config(meta, reader, path)
    _check_complete(reader, config, path)
    keep = keep_q4_0 and _all_decoder_matrices_q4_0(reader)
    if keep:
        config = config.replace(quantization="int4", quantized_lm_head=_output_is_quantized(reader))
    try:
        tokenizer, tokenizer_error = _tokenizer(meta, path), None
    except (CheckpointError, TokenizerError) as err:  # an unsupported vocabulary: an error only if no other
        # tokenizer is given
        tokenizer, tokenizer_error = None, str(err)
    dtype = dtype or getattr(torch, config.torch_dtype)
    return GgufCheckpoint(config, tokenizer, _tensors(reader, config, path, keep, dtype),
                          {"group_size": BLOCK} if keep else None, tokenizer_error)


def _check_complete(reader, config: ModelConfig, path) -> None:
    """Every tensor of the architecture is in the file(s), before any is read or written elsewhere."""
    present = {t.name for t in reader.tensors}
    missing = [name for name in tensor_names(config.num_layers).values() if name not in present]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise CheckpointError(f"{path}: the GGUF file lacks tensor(s) {', '.join(missing[:3])}{more}")


def _output_is_quantized(reader) -> bool:
    """The output layer is stored in a quantized GGML type (not F32 / F16 / BF16)."""
    g = _gguf()
    floats = (g.GGMLQuantizationType.F32, g.GGMLQuantizationType.F16, g.GGMLQuantizationType.BF16)
    return any(t.name == "output.weight" and t.tensor_type not in floats for t in reader.tensors)


def _all_decoder_matrices_q4_0(reader) -> bool:
    g = _gguf()
    matrices = [t for t in reader.tensors if t.name.split(".")[-2:-1] and t.name.split(".")[-2] in DECODER_MATRICES]
    return bool(matrices) and all(t.tensor_type == g.GGMLQuantizationType.Q4_0 for t in matrices)


def read_gguf_config(path: str | Path, keep_q4_0: bool = False) -> ModelConfig:
    """The file's configuration; with `keep_q4_0`, as `read_gguf` loads it (quantization "int4" when its
    decoder matrices are all Q4_0)."""
    reader = _open(path)
    config = _config(_Metadata(reader, path), reader, path)
    if keep_q4_0 and _all_decoder_matrices_q4_0(reader):
        config = config.replace(quantization="int4", quantized_lm_head=_output_is_quantized(reader))
    return config


def stored_size(path: str | Path) -> tuple[int, str]:
    """(bytes of tensor data, the tensor types of its matrices, e.g. "Q4_0+Q8_0") without reading weights."""
    reader = _open(path)
    types = sorted({t.tensor_type.name for t in reader.tensors if len(t.shape) == 2})
    return sum(int(t.n_bytes) for t in reader.tensors), "+".join(types)


def _open(path: str | Path):
    """The file's reader; for a split GGUF (llama.cpp's gguf-split, `NAME-00001-of-00003.gguf`) one
    reader over all its shards: the first one's metadata, every shard's tensors."""
    reader = _open_one(path)
    field = reader.fields.get("split.count")
    count = int(field.contents()) if field is not None else 1
    if count <= 1:
        return reader
    number = int(reader.fields["split.no"].contents()) if "split.no" in reader.fields else 0
    match = re.fullmatch(r"(.*)-(\d{5})-of-(\d{5})\.gguf", Path(path).name)
    if number != 0 or match is None:
        raise CheckpointError(f"{path} is shard {number + 1} of {count} of a split GGUF; pass the first shard "
                              "(NAME-00001-of-NNNNN.gguf), the others are read beside it")
    shards = [Path(path).with_name(f"{match.group(1)}-{k:05d}-of-{count:05d}.gguf") for k in range(1, count + 1)]
    absent = [s.name for s in shards if not s.is_file()]
    if absent:
        raise CheckpointError(f"{path} is split in {count} shards; {', '.join(absent)} not found beside it")
    return _Shards(reader, [reader] + [_open_one(s) for s in shards[1:]])


class _Shards:
    """A split GGUF read as one: the first shard's metadata, all the shards' tensors."""

    def __init__(self, first, readers: list) -> None:
        self.fields = first.fields
        self.tensors = [t for r in readers for t in r.tensors]


def _open_one(path: str | Path):
    g = _gguf()
    try:
        return g.GGUFReader(str(path))
    except ValueError as e:
        if "GGMLQuantizationType" in str(e):  # a type the installed gguf package does not know yet
            number = re.search(r"(\d+)\)? is not a valid", str(e))
            kind = f"tensor type {number.group(1)}" if number else "a tensor type"
            raise CheckpointError(f"{path} holds {kind}, which the installed gguf {_gguf_version()} does not "
                                  "know (a newer llama.cpp type); requantize it to Q8_0, Q4_0 or a K-quant") from None
        raise CheckpointError(f"{path} is a truncated or corrupt GGUF file ({e})") from None
    except (OSError, IndexError, KeyError) as e:
        raise CheckpointError(f"{path} is a truncated or corrupt GGUF file ({e})") from None


def _gguf_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gguf")
    except PackageNotFoundError:
        return "package"


class _Metadata:
    def __init__(self, reader, path) -> None:
        self._fields, self._path = reader.fields, path

    def get(self, key: str, default=None):
        field = self._fields.get(key)
        return default if field is None else field.contents()

    def require(self, key: str):
        value = self.get(key)
        if value is None:
            raise CheckpointError(f"{self._path}: GGUF metadata has no {key}")
        return value


def _config(meta: _Metadata, reader, path) -> ModelConfig:
    arch = meta.require("general.architecture")
    if arch != ARCH:
        raise CheckpointError(f"{path} is a GGUF file of architecture {arch!r}; only {ARCH!r} (Nemotron-4, "
                              "Minitron, Nemotron-Mini) is supported")
    hidden, heads = int(meta.require(f"{ARCH}.embedding_length")), int(meta.require(f"{ARCH}.attention.head_count"))
    head_dim = int(meta.get(f"{ARCH}.attention.key_length", hidden // heads))
    embedding = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
    if embedding is None:
        raise CheckpointError(f"{path}: GGUF file has no token_embd.weight tensor")
    scaling = meta.get(f"{ARCH}.rope.scaling.type", "none")
    factor = float(meta.get(f"{ARCH}.rope.scaling.factor", 1.0))
    if scaling != "none" and factor != 1.0:  # llama.cpp would apply it; the model's config.json is refused too
        raise CheckpointError(f"{path} asks for RoPE scaling ({scaling}, factor {factor:g}), which Nemotron models "
                              "do not use and nemotron does not apply")
    types = {t.tensor_type.name for t in reader.tensors if len(t.shape) == 2}
    stored = "float32" if types == {"F32"} else "bfloat16" if types == {"BF16"} else "float16"
    return ModelConfig(
        vocab_size=int(embedding.shape[1]),  # GGUF shapes list the fastest-moving dimension first
        hidden_size=hidden, intermediate_size=int(meta.require(f"{ARCH}.feed_forward_length")),
        num_layers=int(meta.require(f"{ARCH}.block_count")), num_heads=heads,
        num_kv_heads=int(meta.get(f"{ARCH}.attention.head_count_kv", heads)), head_dim=head_dim,
        max_position_embeddings=int(meta.get(f"{ARCH}.context_length", 4096)),
        rotary_fraction=int(meta.get(f"{ARCH}.rope.dimension_count", head_dim)) / head_dim,
        rope_theta=_float32(meta.get(f"{ARCH}.rope.freq_base", 10000.0)),
        norm_eps=_float32(meta.get(f"{ARCH}.attention.layer_norm_epsilon", 1e-5)),
        bos_token_id=int(meta.get("tokenizer.ggml.bos_token_id", 2)),
        eos_token_id=int(meta.get("tokenizer.ggml.eos_token_id", 3)),
        pad_token_id=int(meta.get("tokenizer.ggml.padding_token_id", 0)),
        torch_dtype=stored)


def _float32(value) -> float:
    """A float32 from the file as the decimal it was written from (1e-05, not 9.99999974e-06)."""
    return float(str(np.float32(value)))


def _tensors(reader, config: ModelConfig, path, keep_q4_0: bool = False,
             dtype: torch.dtype = torch.float32) -> Iterator[tuple[str, torch.Tensor]]:
    to_hf = {v: k for k, v in tensor_names(config.num_layers).items()}
    for tensor in reader.tensors:
        hf_name = to_hf.get(tensor.name)
        if hf_name is None:
            if tensor.name in ("rope_freqs.weight",) or tensor.name.endswith("rot_embd"):
                continue  # recomputed from the config
            raise CheckpointError(f"{path}: unexpected GGUF tensor {tensor.name!r}")
        if keep_q4_0 and tensor.name.split(".")[-2] in DECODER_MATRICES:
            yield from _q4_0_pieces(hf_name, tensor)
            continue
        head = hf_name == "lm_head.weight" and config.quantized_lm_head
        try:
            if head:
                for suffix, part in _int8_head(tensor).items():
                    yield "lm_head." + suffix, part
                continue
            out = _dequantized(tensor, dtype, minus_one=_is_norm_weight(hf_name))
        except NotImplementedError:
            raise CheckpointError(f"{path}: tensor {tensor.name} is stored as {tensor.tensor_type.name}, which cannot "
                                  "be read; supported: F32, F16, BF16, Q8_0, Q4_0/1, Q5_0/1, K-quants, IQ and TQ "
                                  "types and MXFP4") from None
        yield hf_name, out


DEQUANTIZE_ROWS_ELEMENTS = 1 << 24  # weights dequantized at a time: the gguf package's numpy temporaries are
# several times its output (a 256k-vocabulary embedding at once: 6.6 GB of peak for 3.1 GB of float32)


def _bands(tensor) -> Iterator[tuple[slice, torch.Tensor]]:
    """(rows, those rows as float32) of a tensor of the mapped file, a band of rows at a time."""
    g = _gguf()
    shape = tuple(int(d) for d in reversed(tensor.shape))  # GGUF lists the fastest-moving dimension first
    width = shape[-1]
    data = np.asarray(tensor.data).reshape(math.prod(shape[:-1]), -1)  # a row of elements or of blocks each
    step = max(1, DEQUANTIZE_ROWS_ELEMENTS // width)
    for start in range(0, data.shape[0], step):
        band = g.quants.dequantize(data[start:start + step], tensor.tensor_type)
        yield slice(start, start + step), torch.from_numpy(np.array(band, dtype=np.float32).reshape(-1, width))


def _dequantized(tensor, dtype: torch.dtype, minus_one: bool = False) -> torch.Tensor:
    """A tensor of the mapped file in `dtype` (a copy; norms `minus_one`: LayerNorm1p's stored 1 taken off
    in float32 first, as the weights were written)."""
    shape = tuple(int(d) for d in reversed(tensor.shape))
    out = torch.empty(shape, dtype=dtype)
    rows = out.view(-1, shape[-1])
    for where, band in _bands(tensor):
        rows[where] = band - 1.0 if minus_one else band
    return out


def _int8_head(tensor) -> dict[str, torch.Tensor]:
    """The output layer as our int8 LM head (one scale per row), quantized a band of rows at a time."""
    from nemotron.quant.transform import HEAD_CLASS

    rows, width = (int(d) for d in reversed(tensor.shape))
    parts: dict[str, torch.Tensor] = {}
    for where, band in _bands(tensor):
        for name, piece in HEAD_CLASS.quantize_weight(band).items():
            if name not in parts:
                parts[name] = torch.empty((rows, *piece.shape[1:]), dtype=piece.dtype)
            parts[name][where] = piece
    return parts


def _q4_0_pieces(hf_name: str, tensor) -> Iterator[tuple[str, torch.Tensor]]:
    """A Q4_0 matrix (N, K) as int4 with groups of 32: packed (N, K/2) uint8, scales (N, K/32) float16."""
    rows, cols = (int(d) for d in reversed(tensor.shape))
    blocks = np.asarray(tensor.data, dtype=np.uint8).reshape(rows, cols // BLOCK, Q4_0_BYTES)
    prefix = hf_name.removesuffix("weight")
    yield prefix + "weight_packed", torch.from_numpy(blocks[..., 2:].reshape(rows, cols // 2).copy())
    yield prefix + "weight_scale", torch.from_numpy(blocks[..., :2].copy().view(np.float16).reshape(rows, -1))


def _tokenizer(meta: _Metadata, path) -> Tokenizer | None:
    sp_bytes = meta.get(SENTENCEPIECE_KEY)
    if sp_bytes is not None:
        return Tokenizer.from_sentencepiece_bytes(base64.b64decode(sp_bytes), source=f"{path} (embedded tokenizer)")
    hf_json = meta.get(HF_JSON_KEY)
    if hf_json is not None:
        return Tokenizer.from_tokenizer_json_bytes(hf_json.encode("utf-8"), source=f"{path} (embedded tokenizer)")
    kind = meta.get("tokenizer.ggml.model")
    if kind is None:
        return None
    tokens = meta.require("tokenizer.ggml.tokens")
    types = meta.get("tokenizer.ggml.token_type") or [int(PieceType.NORMAL)] * len(tokens)
    markers = {role: meta.get(f"tokenizer.ggml.{key}_token_id") for role, key in
               (("bos", "bos"), ("eos", "eos"), ("pad", "padding"), ("unk", "unknown"))}
    if kind == "llama":
        scores = meta.get("tokenizer.ggml.scores") or [0.0] * len(tokens)
        pieces = [Piece(t, float(s), PieceType(int(k))) for t, s, k in zip(tokens, scores, types)]
        names = {role: tokens[i] for role, i in markers.items() if i is not None and 0 <= i < len(tokens)}
        data = build_model(pieces, bpe=True, add_dummy_prefix=bool(meta.get("tokenizer.ggml.add_space_prefix", True)),
                           markers=names)
        return Tokenizer.from_sentencepiece_bytes(data, source=f"{path} (GGUF vocabulary)")
    if kind == "gpt2":
        pre_name = meta.get("tokenizer.ggml.pre", "default")
        pre = _byte_level_pre_tokenizer(pre_name, path)
        spec = _byte_level_bpe_json(tokens, meta.get("tokenizer.ggml.merges") or [], types, pre,
                                    ignore_merges=pre_name in IGNORE_MERGES)
        return Tokenizer.from_tokenizer_json_bytes(json.dumps(spec).encode(), source=f"{path} (GGUF vocabulary)",
                                                   markers=tuple(markers[r] for r in ("bos", "eos", "pad")))
    raise CheckpointError(f"{path}: GGUF tokenizer kind {kind!r} is not supported (only 'llama' and 'gpt2'); "
                          "pass --tokenizer with the model's tokenizer file")


def _pre_tokenizer_name(pre: dict | None) -> str:
    """llama.cpp's name for a byte-level BPE pre-tokenizer ("default" where it has none)."""
    if pre and pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"
    steps = pre.get("pretokenizers", []) if pre and pre.get("type") == "Sequence" else []
    if len(steps) == 2 and steps[0].get("type") == "Split" and steps[1].get("type") == "ByteLevel":
        pattern = steps[0].get("pattern", {}).get("Regex")
        return next((name for name, known in PRE_TOKENIZERS.items() if known and known == pattern), "default")
    return "default"


def _byte_level_pre_tokenizer(name: str, path) -> dict:
    if name in ("gpt-2", "default"):
        return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    if PRE_TOKENIZERS.get(name) is None:
        raise CheckpointError(f"{path}: GGUF byte-level BPE pre-tokenizer {name!r} is not supported (only "
                              f"{', '.join(PRE_TOKENIZERS)}); pass --tokenizer with the model's tokenizer.json")
    return {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": PRE_TOKENIZERS[name]}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}


def _byte_level_bpe_json(tokens: list[str], merges: list[str], types: Iterable[int], pre: dict,
                         ignore_merges: bool) -> dict:
    """A tokenizer.json for llama.cpp's `gpt2` vocabulary (byte-level BPE)."""
    types = list(types)
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
              "special": types[i] == PieceType.CONTROL}
             for i, t in enumerate(tokens) if types[i] in (PieceType.CONTROL, PieceType.USER_DEFINED)]
    model = {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
             "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": ignore_merges,
             "vocab": {t: i for i, t in enumerate(tokens)}, "merges": [m.split(" ", 1) for m in merges]}
    decoder = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
            "pre_tokenizer": pre, "post_processor": None, "decoder": decoder, "model": model}
