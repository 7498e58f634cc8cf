"""`nemotron convert SRC DST`: any supported checkpoint to a Hugging Face directory."""
from __future__ import annotations

import argparse
import re
import sys

from nemotron.errors import NemotronError

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]I?B|B)?\s*", text, re.IGNORECASE)
    if not match:
        raise NemotronError(f"cannot read size {text!r}; write e.g. 5GB, 500MB or 2GiB")
    number, unit = match.groups()
    return int(float(number) * _UNITS[(unit or "").upper()])


def register(commands) -> None:
    parser = commands.add_parser("convert", help="convert a .nemo or HF checkpoint to a Hugging Face directory")
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="default: keep stored dtype")
    parser.add_argument("--shard-size", default="5GB", help="largest safetensors shard, e.g. 5GB, 500MB")
    parser.add_argument("--trust-pickle", action="store_true")
    parser.add_argument("--merge-lora", metavar="ADAPTER",
                        help="fold this LoRA adapter (PEFT layout) into the weights: DST is the merged model")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from nemotron.checkpoint.load import convert

    if args.merge_lora:
        out = _merge(args)
    else:
        out = convert(args.src, args.dst, dtype=args.dtype, trust_pickle=args.trust_pickle,
                      max_shard_bytes=parse_size(args.shard_size))
    print(f"wrote {out}", file=sys.stderr)


def _merge(args: argparse.Namespace):
    """Base model + adapter -> one merged Hugging Face directory, in --dtype or the base's stored dtype."""
    from nemotron.checkpoint.hf import save_hf_dir
    from nemotron.checkpoint.load import load_model, parse_dtype
    from nemotron.checkpoint.peft import merge_adapter_into

    loaded = load_model(args.src, dtype="float32", trust_pickle=args.trust_pickle)  # merge in fp32
    stored_dtype = loaded.config.torch_dtype
    merge_adapter_into(loaded, args.merge_lora)
    out = save_hf_dir(loaded.model.state_dict(), loaded.config, args.dst,
                      dtype=parse_dtype(args.dtype or stored_dtype), max_shard_bytes=parse_size(args.shard_size))
    if loaded.tokenizer is not None:
        loaded.tokenizer.save(out)
    return out
