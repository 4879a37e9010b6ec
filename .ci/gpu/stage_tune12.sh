#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), twelfth session: the W4A16 table re-tuned at M = 128-512 with the
# Gluon kernel offered with one and two consumer warpgroups (kernels.w4a16_tune candidates), then
#   the Gluon and tuned-entry GPU tests on that table -> $OUT/tests.log
#   the kernel benchmark's W4A16 rows at M = 128 and 256 with it -> $OUT/records.tar
# TUNE_M, TUNE_TIMEOUT (300 s), BENCH_M (128,256): the tuned M values, the tuner's time limit, the benchmark's M
source .ci/gpu/env.sh || exit 1
SHAPES="8192x57344 28672x8192 8192x10240 8192x8192 4096x28672 14336x4096 4096x6144 4096x4096 4096x22016 11008x4096 4096x12288"
timeout ${TUNE_TIMEOUT:-300} python3 -m kernels.w4a16_tune $OUT/w4a16.json --merge kernels/tuned/w4a16.json \
  --paths frag dequant gluon --m ${TUNE_M:-128 256 512} --shapes $SHAPES 2>&1 | tee $OUT/tune.log \
  | grep -E "best|wrote|Error" | cut -c1-200
export QUANTBENCH_W4A16_TUNING=$OUT/w4a16.json
timeout 150 python3 -m pytest -q tests/test_kernels_w4a16_gluon.py tests/test_kernels_w4a16.py -k "gluon or every_tuned" \
  > $OUT/tests.log 2>&1
grep -E "passed|failed|^E  |^FAILED" $OUT/tests.log | cut -c1-200 | tail -8
M_VALUES=${BENCH_M:-128,256} BENCH_TIMEOUT=150 bash .ci/gpu/w4_bench.sh
true
