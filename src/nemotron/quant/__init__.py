"""Quantized inference: weights stored in 8 or 4 bits, applied as a transform to a built model.

| scheme | weights                                              | activations         | bits / weight |
|--------|------------------------------------------------------|---------------------|---------------|
| int8   | int8 symmetric, float32 scale per output channel     | 16-bit              | 8 (+ scales)  |
| int4   | int4 symmetric, float16 scale per 128 inputs, packed | 16-bit              | 4.125         |
| fp8    | float8 e4m3, float32 scale per output channel        | float8 e4m3, scaled per token at run time | 8 |

What is quantized: every linear layer of the decoder layers (q/k/v/o, up, down), which hold ~97% of
a 340B model's weights and ~75% of an 8B model's. Embeddings, norms, the LM head and the reward head
stay in the compute dtype: the embedding is only gathered (one row per token, never bandwidth-bound),
the output layer is the most sensitive to error, and the engine reads the LM head's weight for its
device and dtype. On the 8B shape at batch 1 that caps the decode speed-up at the byte ratio of a
step: 1.73x for int8 and 2.67x for int4 over bf16 (benchmarks/quant_decode.py prints the ceiling).

    quantize(model, "int8")            # in place; q/k/v fused afterwards (the engine's fuse_qkv is then a no-op)
    nemotron quantize SRC DST --scheme int4   # a checkpoint that load_model / the engine read directly

Scales are rounded to their stored dtype before the weights are divided by them, so a checkpoint
round trip is exact. Numerics and device paths: linear.py; CUDA kernels: kernels.py.
"""
from nemotron.quant.linear import SCHEMES, Fp8Linear, Int4Linear, Int8Linear, QuantizedLinear
from nemotron.quant.transform import fuse_quantized_qkv, load_quantized_into, quantize

__all__ = ["SCHEMES", "Fp8Linear", "Int4Linear", "Int8Linear", "QuantizedLinear", "fuse_quantized_qkv",
           "load_quantized_into", "quantize"]
