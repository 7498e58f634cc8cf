"""Quantized inference: weights stored in 8 or 4 bits, applied as a transform to a built model.

| scheme | weights                                              | activations         | bits / weight |
|--------|------------------------------------------------------|---------------------|---------------|
| int8   | int8 symmetric, float32 scale per output channel     | 16-bit              | 8 (+ scales)  |
| int4   | int4 symmetric, float16 scale per 128 inputs, packed | 16-bit              | 4.125         |
| fp8    | float8 e4m3, float32 scale per output channel        | float8 e4m3, scaled per token at run time | 8 |

What is quantized: every linear layer of the decoder layers (q/k/v/o, up, down), which hold ~97% of
a 340B model's weights and ~75% of an 8B model's, in the scheme; and the LM head in int8 whatever the
scheme, one scale per vocabulary row (as llama.cpp keeps its output layer at 6-8 bits): the head is
read whole at every decode step, 13.6% of the 8B shape's bytes and a fifth of Nemotron-Mini's (256k x
3072), and in bf16 it capped the 8B shape's batch-1 speed-up at 1.73x for int8 and 2.67x for int4
(with it: 2.0x and 3.38x; benchmarks/quant_decode.py prints the ceiling). `head=False` (`--keep-head`)
leaves it as it is. Embeddings, norms and a reward head stay in the compute dtype: the embedding is
only gathered (one row per token, never bandwidth-bound).

    quantize(model, "int8")            # in place; q/k/v fused afterwards (the engine's fuse_qkv is then a no-op)
    nemotron quantize SRC DST --scheme int4   # a checkpoint that load_model / the engine read directly

Scales are rounded to their stored dtype before the weights are divided by them, so a checkpoint
round trip is exact. Numerics and device paths: linear.py; CUDA kernels: kernels.py.
"""
from nemotron.quant.linear import SCHEMES, Fp8Linear, Int4Linear, Int8Linear, QuantizedLinear
from nemotron.quant.transform import HEAD_CLASS, fuse_quantized_qkv, load_quantized_into, quantize

__all__ = ["HEAD_CLASS", "SCHEMES", "Fp8Linear", "Int4Linear", "Int8Linear", "QuantizedLinear", "fuse_quantized_qkv",
           "load_quantized_into", "quantize"]
