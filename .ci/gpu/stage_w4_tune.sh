#!/usr/bin/env bash
# Device machine (carry .whl): the W4A16 kernels since git 865a6ce (16-bit magic-number dequantization in the
# tiled and skinny kernels, larger tiles, swap_ab) on the GPU: their tests (numerics on CUDA); the gemv path at
# M = 1 on the Llama-2-7B shapes (never tuned: issue 7's batch-1 decode runs them); a re-tune of M = 8..1024
# (skinny, tiled, dequant + cuBLAS), Llama-2-7B shapes first, then Llama-3-70B, then Llama-3-8B, merged into the
# committed table -> $OUT/w4a16.json (rewritten after each shape: a time limit keeps what finished) and
# /root/qb/w4a16.json (env.sh points later calls on this warm machine at it); then the kernel benchmark on
# Llama-3-70B with that table. About 9 minutes; commit $OUT/w4a16.json as kernels/tuned/w4a16.json.
source .ci/gpu/env.sh || exit 1
L2="4096x12288 4096x4096 4096x22016 11008x4096"
L70="8192x57344 8192x10240 28672x8192 8192x8192"
L8="4096x28672 4096x6144 14336x4096"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv,noheader
python3 -c "import torch, triton; print(torch.__version__, triton.__version__)"
timeout 90 python3 -m pytest -q -x tests/test_kernels_w4a16.py 2>&1 | grep -E "passed|failed|Error|assert" | tail -4
T=$OUT/w4a16.json
cp kernels/tuned/w4a16.json $T
timeout 140 python3 -m kernels.w4a16_tune $T --m 1 --paths gemv --iters 10 --shapes $L2 2>&1 \
  | tee $OUT/tune.log | grep -E "best|wrote|Error" | cut -c1-170
timeout 255 python3 -m kernels.w4a16_tune $T --m 8 16 32 64 128 256 1024 --paths skinny tiled dequant --iters 10 \
  --shapes $L2 $L70 $L8 2>&1 | tee -a $OUT/tune.log | grep -E "best|wrote|Error" | cut -c1-170
mkdir -p /root/qb && cp $T /root/qb/w4a16.json
export QUANTBENCH_W4A16_TUNING=$T
timeout 55 python3 -m harness.metrics.kernels $OUT --models llama-3-70b --m 1 16 64 256 1024 \
  --backends cublas_float16 triton_w4a16_g128 2>&1 | tee -a $OUT/bench.log | grep -E "record|gate_up" | cut -c1-110
