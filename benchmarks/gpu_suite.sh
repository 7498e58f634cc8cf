#!/usr/bin/env bash
# Every GPU measurement of the engine in one run (one device lease): kernel correctness compiled on
# the GPU, then decode (batch 1 and 64, with the bandwidth fraction), throughput and prefix caching
# on the 8B shape in bf16. Run from the repository root on a machine with a CUDA GPU:
#   bash benchmarks/gpu_suite.sh 2>&1 | tee gpu_suite.log
set -uo pipefail
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
python3 -m pytest -q -p no:cacheprovider tests/engine/test_triton_attention.py -k kernel
python3 benchmarks/decode.py --preset 8b --batch-sizes 1 64 --prompt-len 128 --new-tokens 256 --repeats 2
python3 benchmarks/decode.py --preset 8b --batch-sizes 1 64 --new-tokens 128 --repeats 1 --skip-transformers \
    --attention-backend torch  # the PyTorch path (decode lanes, no CUDA graphs), for comparison
python3 benchmarks/throughput.py --preset 8b --requests 256 --batch 64 --skip-sequential
python3 benchmarks/prefix_cache.py --preset 8b --requests 256
python3 -m pytest -q -p no:cacheprovider tests/quant/test_kernels.py
python3 benchmarks/quant_decode.py
