#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), twelfth session: the Gluon W4A16 kernels reading zero codes.
#   1  the Gluon and tuned-entry GPU tests (gluon entries now also run on zero-code layers) -> $OUT/tests.log
#   2  the kernel benchmark's W4A16 rows (symmetric and zero codes) at M = 128, 256 -> $OUT/records.tar
source .ci/gpu/env.sh || exit 1
timeout 200 python3 -m pytest -q tests/test_kernels_w4a16_gluon.py tests/test_kernels_w4a16.py -k "gluon or every_tuned" \
  > $OUT/tests.log 2>&1
grep -E "passed|failed|^E  |^FAILED" $OUT/tests.log | cut -c1-200 | tail -8
M_VALUES=${M_VALUES:-128,256} BENCH_TIMEOUT=150 bash .ci/gpu/w4_bench.sh
true
