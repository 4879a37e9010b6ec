#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), 2-5 minutes (eighth session, calls 6-7): frag reads uint8 zero
# codes as the 32-bit words that hold them (Z_WORDS: asynchronous copies, not a synchronous byte load a K-block).
#   1  the GPU tests selected by TESTS_K ($OUT/tests.log)                                                ~40 s
#   2  the kernel benchmark at M_VALUES with the committed table: cuBLAS bf16/fp16, our W4A16 symmetric and
#      with zero codes, all 12 layers -> $OUT/records.tar                                                <= 240 s
#   call 6: defaults; call 7 (as stage_zero_words_large.sh at ed5d8cd): M_VALUES=64,128,256 TESTS_K="frag and codes"
source .ci/gpu/env.sh || exit 1
timeout 150 python3 -m pytest -q tests/test_kernels_w4a16.py -k "${TESTS_K:-frag or fragment or zero}" \
  > $OUT/tests.log 2>&1
grep -E "passed|failed|^E |^FAILED" $OUT/tests.log | tail -8
M_VALUES=${M_VALUES:-1,2,4,8,16,32,64,128,256} bash .ci/gpu/w4_bench.sh
