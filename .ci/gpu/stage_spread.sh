#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), about 8 minutes: the M = 1 gemv with its activations spread over
# the lanes (fewer instructions a weight, sm_90 SASS):
#   1  the W4A16 kernel tests on the GPU                                                             ~70 s
#   2  the M = 1 configs of the Llama-2-7B shapes re-timed back to back under PDL (gemv_b2b_tune.py) ~100 s
#   3  compiled + fused batch-1 decode (split_kv, PDL) of none/gptq/awq with that table             <= 300 s
source .ci/gpu/env.sh || exit 1
timeout 150 python3 -m pytest -q tests/test_kernels_w4a16.py 2>&1 | grep -E "passed|failed|^E |^FAILED" | tail -6
bash .ci/gpu/stage_b2b_tune.sh  # steps 2 and 3
