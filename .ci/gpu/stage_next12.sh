#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), prepared in the eleventh session as the first call of the next,
# ~9 minutes: the Gluon W4A16 path (kernels/w4a16_gluon.py, path="gluon") on the GPU.
#   1  its GPU tests (never run: written after the eleventh session's device time was spent) -> $OUT/tests.log
#   2  the path on every Llama shape at M = 256, 512, 1024 beside the tuned W4A16 and cuBLAS fp16
#      -> $OUT/w4_gluon.log
#   3  the W4A16 table re-tuned at M = 256-1024 with the Gluon kernel offered (frag, dequant, gluon)
#      -> $OUT/w4a16.json (commit as kernels/tuned/w4a16.json), $OUT/tune.log; the tuned entries' GPU tests on it
#   4  the kernel benchmark's W4A16 rows at M = 128, 256, 1024 with that table -> $OUT/records.tar
source .ci/gpu/env.sh || exit 1
SHAPES="8192x57344 28672x8192 8192x10240 8192x8192 4096x28672 14336x4096 4096x6144 4096x4096 4096x22016 11008x4096 4096x12288"
timeout 120 python3 -m pytest -q tests/test_kernels_w4a16_gluon.py > $OUT/tests.log 2>&1
grep -E "passed|failed|^E  |^FAILED" $OUT/tests.log | cut -c1-200 | tail -8
SHAPES="$SHAPES" timeout 120 python3 .ci/gpu/gluon_w4_ws_probe.py run 256 512 1024 2>&1 | grep -v Warn \
  | tee $OUT/w4_gluon.log | tail -33
timeout 200 python3 -m kernels.w4a16_tune $OUT/w4a16.json --merge kernels/tuned/w4a16.json \
  --paths frag dequant gluon --m 256 512 1024 --shapes $SHAPES 2>&1 | tee $OUT/tune.log \
  | grep -E "best|wrote|Error" | cut -c1-160
export QUANTBENCH_W4A16_TUNING=$OUT/w4a16.json
timeout 100 python3 -m pytest -q tests/test_kernels_w4a16.py -k "every_tuned" 2>&1 | tail -2
M_VALUES=128,256,1024 BENCH_TIMEOUT=120 bash .ci/gpu/w4_bench.sh
true
