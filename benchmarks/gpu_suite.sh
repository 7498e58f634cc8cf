#!/usr/bin/env bash
# Every GPU measurement of the engine in one run (one device lease): kernel correctness compiled on
# the GPU (attention, norms, rotary, the engine's captured CUDA graphs against the PyTorch path), then decode (batch 1
# and 64, with the bandwidth fraction), quantized decode, throughput and prefix caching on the 8B
# shape in bf16. Each step has its own time limit, so one that hangs leaves the rest their time.
# Run from the repository root on a machine with a CUDA GPU:
#   bash benchmarks/gpu_suite.sh 2>&1 | tee gpu_suite.log
#   bash benchmarks/gpu_suite.sh quant prefix      # only the steps named (tests kernels decode quant
#                                                  # throughput prefix profile-kernels profile-engine
#                                                  # torch-path)
# On an H200 (second runs): tests + kernels 80 s under xdist, decode 88 s, quant 92 s, prefix 35 s,
# profile-kernels 78 s, profile-engine over 120 s. A 15-minute device lease fits two calls:
#   bash benchmarks/gpu_suite.sh tests kernels decode quant throughput
#   bash benchmarks/gpu_suite.sh prefix profile-kernels profile-engine
set -uo pipefail
export PYTHONPATH="$PWD/src:$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
SUITE_START=$SECONDS

STEPS=" ${*:-tests kernels decode quant throughput prefix profile-kernels profile-engine torch-path} "

step() {  # step NAME SECONDS COMMAND...: run it (if named) under a time limit and say how long it took
  local name=$1 limit=$2 start=$SECONDS rc
  shift 2
  [[ $STEPS == *" $name "* ]] || return 0
  echo "=== $* (limit ${limit}s)"
  timeout --kill-after=10 "$limit" "$@"
  rc=$?
  echo "=== rc $rc after $((SECONDS - start))s (suite at $((SECONDS - SUITE_START))s)"
}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
# Test processes compile their Triton kernels in parallel where pytest-xdist is installed.
PARALLEL=$(python3 -c "import xdist" 2>/dev/null && echo "-n 6")
step tests 150 python3 -m pytest -q -p no:cacheprovider $PARALLEL tests/engine/test_triton_attention.py \
    tests/engine/test_triton_norm.py tests/engine/test_triton_rotary.py tests/engine/test_triton_activation.py \
    tests/model/test_causal_attention.py
step tests 60 python3 -m pytest -q -p no:cacheprovider tests/engine/test_kv_budget.py  # alone: it reads allocator peaks
step kernels 150 python3 -m pytest -q -p no:cacheprovider $PARALLEL tests/quant/test_kernels.py
step decode 150 python3 benchmarks/decode.py --preset 8b --batch-sizes 1 64 --prompt-len 128 --new-tokens 256 --repeats 2
step quant 210 python3 benchmarks/quant_decode.py
step throughput 120 python3 benchmarks/throughput.py --preset 8b --requests 256 --batch 64 --skip-sequential
step prefix 90 python3 benchmarks/prefix_cache.py --preset 8b --requests 256
# Where the time goes: kernel configs timed as GPU time, and the engine's steps by kernel (gpu_profile.py).
step profile-kernels 150 python3 benchmarks/gpu_profile.py --skip-engine
step profile-engine 180 python3 benchmarks/gpu_profile.py --skip-kernels
# The PyTorch path (decode lanes, no CUDA graphs), for comparison.
step torch-path 90 python3 benchmarks/decode.py --preset 8b --batch-sizes 1 64 --new-tokens 128 --repeats 1 --skip-transformers \
    --attention-backend torch
