#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), prepared in the twelfth session as the first call of the next,
# ~10 minutes: the W4A16 table re-tuned with the TMA-words Gluon kernel (twelfth session, call 8: 1.04-1.22x faster
# than the kernel the table was tuned with; at M = 1024 it may beat dequantize + cuBLAS on 5-7 of 11 shapes).
#   1  re-tune M = 128-1024 on the 11 Llama shapes (frag, dequant, gluon with 1 and 2 consumers, at M = 128 also
#      with 64-token tiles: their first GPU run, as are their GPU tests below) -> $OUT/w4a16.json
#      (commit as kernels/tuned/w4a16.json if the tests pass), $OUT/tune.log
#   2  the Gluon and tuned-entry GPU tests on that table -> $OUT/tests.log
#   3  the kernel benchmark's W4A16 rows (symmetric and zero codes) at M = 128, 256, 1024 -> $OUT/records.tar
TUNE_M="128 256 512 1024" TUNE_TIMEOUT=380 BENCH_M=128,256,1024 bash .ci/gpu/stage_tune12.sh
