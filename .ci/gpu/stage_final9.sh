#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), ninth session call 6, ~4 minutes:
#   1  .ci/gpu/splitk_stress.py: the split-K / stream-K frag configs that failed a check, 100 runs each, with the
#      workspace checked clean before and after every run ($OUT/stress.log)
#   2  the kernel benchmark, backends of each (shape, M) timed together, M = 1..4096 -> $OUT/records.tar
#   3  the GPU test running every committed table entry three times ($OUT/tests.log)
source .ci/gpu/env.sh || exit 1
timeout 120 python3 .ci/gpu/splitk_stress.py 100 8192x8192:256:128:128:4:3:2 8192x8192:128:128:128:4:3:4 \
  8192x10240:2:16:128:4:4:4 8192x10240:4:16:128:4:5:4 8192x57344:32:32:256:4:3:1:2 8192x8192:2:16:256:4:3:8 \
  8192x8192:16:16:256:4:3:8:0:1 2>&1 | tee $OUT/stress.log
M_VALUES=1,2,4,8,16,32,64,128,256,512,1024,4096 BENCH_TIMEOUT=200 bash .ci/gpu/w4_bench.sh
timeout 110 python3 -m pytest -q tests/test_kernels_w4a16.py -k "every_tuned" > $OUT/tests.log 2>&1
grep -E "passed|failed|^E  " $OUT/tests.log | cut -c1-300 | tail -6
true
