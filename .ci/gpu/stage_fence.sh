#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), ninth session call 7, ~2 minutes: split-K's last-arrival protocol
# with a GPU-scope fence in every thread (`kernels.splitk.last_arrival`).
#   1  .ci/gpu/splitk_stress.py on the three frag configs that missed partial sums in call 6, 300 runs each
#   2  GPU tests: split-K, stream-K and every committed table entry ($OUT/tests.log)
source .ci/gpu/env.sh || exit 1
timeout 90 python3 .ci/gpu/splitk_stress.py 300 8192x8192:256:128:128:4:3:2 8192x10240:2:16:128:4:4:4 \
  8192x10240:4:16:128:4:5:4 2>&1 | tee $OUT/stress.log
timeout 100 python3 -m pytest -q tests/test_kernels_w4a16.py -k "split_k or stream_k or every_tuned" > $OUT/tests.log 2>&1
grep -E "passed|failed|^E  " $OUT/tests.log | cut -c1-300 | tail -6
true
