#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), tenth session call 1, ~6 minutes: does the split-K clearing
# barrier (57cd59a) fix the split-K race?
#   1  .ci/gpu/splitk_stress.py: the three configs that were off in 1-5 runs of 100 (ninth session, call 6), 300
#      runs each, and the other split-K / stream-K configs of that call, 100 runs each ($OUT/stress.log)
#   2  the GPU tests of the W4A16 and FP8 kernels: every committed table entry three times, the heuristic
#      configs, split-K and stream-K ($OUT/tests.log)
source .ci/gpu/env.sh || exit 1
nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv,noheader
timeout 170 python3 .ci/gpu/splitk_stress.py 300 8192x8192:256:128:128:4:3:2 8192x10240:2:16:128:4:4:4 \
  8192x10240:4:16:128:4:5:4 2>&1 | tee $OUT/stress.log
timeout 100 python3 .ci/gpu/splitk_stress.py 100 8192x8192:128:128:128:4:3:4 8192x57344:32:32:256:4:3:1:2 \
  8192x8192:2:16:256:4:3:8 8192x8192:16:16:256:4:3:8:0:1 2>&1 | tee -a $OUT/stress.log
timeout 280 python3 -m pytest -q tests/test_kernels_w4a16.py tests/test_kernels_fp8.py > $OUT/tests.log 2>&1
grep -E "passed|failed|^E  |^FAILED" $OUT/tests.log | cut -c1-300 | tail -12
true
