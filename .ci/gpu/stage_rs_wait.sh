#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), ninth session: the frag kernel retires each K-block's wgmmas
# before the next block's A registers are written (the register-A race of triton 3.6, `kernels/w4a16.py`).
#   1  GPU tests selected by TESTS_K, including every committed table entry run three times on its own shape
#      ($OUT/tests.log)
#   2  .ci/gpu/frag_check.py on the configs that were wrong in call 2 ($OUT/check.log)
#   3  the frag path re-tuned at TUNE_M (merged into the committed table -> $OUT/w4a16.json, the tuner's log
#      $OUT/tune_decode.log), then with M_VALUES set the kernel benchmark (`w4_bench.sh`) -> $OUT/records.tar
source .ci/gpu/env.sh || exit 1
timeout ${TESTS_TIMEOUT:-200} python3 -m pytest -q tests/test_kernels_w4a16.py \
  -k "${TESTS_K:-stream_k or frag or split_k or every_tuned}" > $OUT/tests.log 2>&1
grep -E "passed|failed|^E |^FAILED" $OUT/tests.log | cut -c1-300 | tail -14
if [ -z "${SKIP_CHECK:-}" ]; then
  { timeout 120 python3 .ci/gpu/frag_check.py 1024x256 128:128:128:8:3:1 256:256:128:8:3:1 128:128:128:8:3:2
    timeout 120 python3 .ci/gpu/frag_check.py 28672x8192 128:128:128:4:3:4 128:128:128:8:3:4 256:256:128:8:3:1
  } 2>&1 | tee $OUT/check.log | grep -v "^    "
fi
if [ -n "${M_VALUES:-}" ]; then
  bash .ci/gpu/w4_bench.sh
else
  TUNE_M=${TUNE_M:-1 2 4 8 16} NO_BENCH=1 bash .ci/gpu/w4_bench.sh
fi
true
