#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), about 8 minutes: the code-plane W4A16 kernel (path planes), built
# after the third 2026-11-27 session's device time ran out, for issue 6's M = 32-1024 band (>= 0.9x fp16):
#   1  the W4A16 tests on the GPU (planes numerics included)                                          ~60 s
#   2  re-tune M = 32-1024 on the Llama-2-7B shapes with planes beside tiled and dequant
#      -> $OUT/w4a16.json (merged into the committed table; rewritten after each shape)              <= 330 s
#   3  the kernel benchmark at those M with that table: ours against fp16 cuBLAS                     <= 100 s
source .ci/gpu/env.sh || exit 1
timeout 100 python3 -m pytest -q tests/test_kernels_w4a16.py 2>&1 | grep -E "passed|failed|^E " | tail -4
T=$OUT/w4a16.json
cp kernels/tuned/w4a16.json $T
timeout 330 python3 -m kernels.w4a16_tune $T --m 32 64 128 256 1024 --paths tiled planes dequant --iters 10 \
  --shapes 4096x12288 4096x4096 4096x22016 11008x4096 2>&1 | tee $OUT/w4a16_planes_tune.log \
  | grep -E "best|wrote|Error" | cut -c1-200
grep -c "'path': 'planes'" $T
export QUANTBENCH_W4A16_TUNING=$T
timeout 100 python3 -m harness.metrics.kernels $OUT --models llama-2-7b --m 32 64 128 256 1024 \
  --backends cublas_float16 triton_w4a16_g128 2>&1 | tee $OUT/bench.log | grep -E "M= " | cut -c1-100
