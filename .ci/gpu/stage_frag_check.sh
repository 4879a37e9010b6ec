#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), ~3 minutes (ninth session): which frag configs compute wrong
# results on the GPU, and how (call 1's tuner rejected 128 x 128 / 8 warps at 0.12-0.14 relative error, 256 x 128 /
# 8 warps at 5.0-5.8e-3, and gave NaN for split-K 128 x 128 / 4 warps after them).
#   1  the GPU tests of stream-K and the tuner's candidates ($OUT/tests.log)
#   2  .ci/gpu/frag_check.py on the Llama-3-70B gate_up and down shapes and a small one ($OUT/check.log)
source .ci/gpu/env.sh || exit 1
timeout 120 python3 -m pytest -q tests/test_kernels_w4a16.py -k "stream_k or tuner_offers" > $OUT/tests.log 2>&1
grep -E "passed|failed|^E |^FAILED" $OUT/tests.log | tail -8
{
timeout 150 python3 .ci/gpu/frag_check.py 1024x256 128:128:128:4:3:1 128:128:128:8:3:1 128:128:128:8:2:1 \
  256:256:128:8:3:1 256:256:128:4:3:1 128:128:128:8:3:2 128:128:128:4:3:2 128:64:128:4:3:1 128:128:64:4:3:1 \
  128:128:128:8:3:1:1
timeout 150 python3 .ci/gpu/frag_check.py 8192x57344 128:128:128:4:3:1 128:128:128:8:3:1 256:256:128:8:3:1 \
  256:128:128:4:3:1 256:128:128:4:3:1:1 256:256:128:8:3:1:1 64:64:128:4:4:1
timeout 150 python3 .ci/gpu/frag_check.py 28672x8192 128:128:128:4:3:4 128:128:128:4:3:1 128:128:128:8:3:4 \
  128:128:128:4:3:4 128:128:128:4:3:1:2 128:128:128:4:3:2
} 2>&1 | tee $OUT/check.log
