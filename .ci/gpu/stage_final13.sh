#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), thirteenth session (an H200; on an H100 it tunes and benchmarks that
# GPU, the next session's first call), ~8 minutes:
#   1  the Gluon W4A16 GPU tests (the 128 x 256 tiles' first run as tests) -> $OUT/tests.log
#   2  the W4A16 table tuned for this GPU at M = 256, 1024, 4096 on the 11 Llama shapes, dequantize + cuBLAS and the
#      Gluon kernel offered (128 x 256 tiles from M = 129; other M and paths: the H100's entries, same chip)
#      -> $OUT/w4a16.json (commit as kernels/tuned/w4a16.json once its entries pass their GPU test), $OUT/tune.log
#   3  the kernel benchmark's W4A16 rows (symmetric and zero codes) with it at M = 256, 1024, 4096 -> $OUT/records.tar
source .ci/gpu/env.sh || exit 1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
timeout 110 python3 -m pytest -q tests/test_kernels_w4a16_gluon.py > $OUT/tests.log 2>&1
grep -E "passed|failed|^E  |^FAILED" $OUT/tests.log | cut -c1-200 | tail -8
SHAPES="8192x57344 28672x8192 8192x10240 8192x8192 4096x28672 14336x4096 4096x6144 4096x4096 4096x22016 11008x4096 4096x12288"
timeout ${TUNE_TIMEOUT:-280} python3 -m kernels.w4a16_tune $OUT/w4a16.json --merge kernels/tuned/w4a16.json \
  --paths dequant gluon --m ${TUNE_M:-256 1024 4096} --shapes $SHAPES 2>&1 | tee $OUT/tune.log \
  | grep -E "best|wrote|Error" | cut -c1-200
export QUANTBENCH_W4A16_TUNING=$OUT/w4a16.json
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | grep -q H200 && echo h200 || echo h100)
GPU=$gpu M_VALUES=${BENCH_M:-256,1024,4096} BENCH_TIMEOUT=170 bash .ci/gpu/w4_bench.sh
true
