#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), ~9 minutes (ninth session): the frag path's stream-K launch
# (`stream_k`: programs per SM share the tiles' K-blocks equally, no partly filled last wave) at M = 128-1024.
#   1  the GPU tests of the frag path, stream-K and split-K ($OUT/tests.log)                              ~40 s
#   2  the frag path re-tuned at TUNE_M with the stream-K candidates, against the committed entries timed
#      first in the same process ($OUT/tune_decode.log, $OUT/w4a16.json)                                  <= 300 s
#   3  the kernel benchmark at M_VALUES with that table: cuBLAS bf16/fp16, our W4A16 symmetric and with zero
#      codes, all 12 layers -> $OUT/records.tar                                                           <= 200 s
source .ci/gpu/env.sh || exit 1
timeout 150 python3 -m pytest -q tests/test_kernels_w4a16.py -k "${TESTS_K:-stream_k or frag or split_k}" \
  > $OUT/tests.log 2>&1
grep -E "passed|failed|^E |^FAILED" $OUT/tests.log | tail -8
TUNE_M=${TUNE_M:-128 256 512 1024} TUNE_TIMEOUT=${TUNE_TIMEOUT:-300} M_VALUES=${M_VALUES:-128,256,512,1024} \
  BENCH_TIMEOUT=${BENCH_TIMEOUT:-200} bash .ci/gpu/w4_bench.sh
