#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), about 2 minutes (eighth session, call 7): zero-code layers at
# M = 64-256 once Z_WORDS is held to BLOCK_M <= 64 (call 6: the word reads slowed the 128-row tiles).
source .ci/gpu/env.sh || exit 1
timeout 100 python3 -m pytest -q tests/test_kernels_w4a16.py -k "frag and codes" > $OUT/tests.log 2>&1
grep -E "passed|failed|^E |^FAILED" $OUT/tests.log | tail -4
timeout 150 python3 -m harness bench=kernels gpu=h100 "bench.kernels.models=[llama-3-70b,llama-3-8b,llama-2-7b]" \
  "bench.kernels.m_values=[64,128,256]" \
  "bench.kernels.backends=[cublas_bfloat16,cublas_float16,triton_w4a16_g128,triton_w4a16_g128_zp]" \
  results_dir=$OUT/h100 progress=false 2>&1 | tee $OUT/kernels.log | grep -E "record|Error|_zp.*M= *(128|256) " | cut -c1-120
tar -C $OUT -cf $OUT/records.tar h100 && rm -rf $OUT/h100
true
