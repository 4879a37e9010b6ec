#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), twelfth session: the Gluon W4A16 kernel with two consumer
# warpgroups (kernels/w4a16_gluon.py, w4a16_ws2_kernel) on the GPU.
#   1  the Gluon W4A16 GPU tests (both kernels) and the tuned-table tests -> $OUT/tests.log
#   2  one and two consumers beside the tuned W4A16 path and cuBLAS fp16 on the 11 Llama shapes at M = 128-4096
#      -> $OUT/ws2.log
source .ci/gpu/env.sh || exit 1
SHAPES="8192x57344 28672x8192 8192x10240 8192x8192 4096x28672 14336x4096 4096x6144 4096x4096 4096x22016 11008x4096 4096x12288"
timeout 150 python3 -m pytest -q tests/test_kernels_w4a16_gluon.py tests/test_kernels_w4a16.py -k "gluon or every_tuned" \
  > $OUT/tests.log 2>&1
grep -E "passed|failed|^E  |^FAILED" $OUT/tests.log | cut -c1-200 | tail -8
SHAPES="$SHAPES" timeout 330 python3 .ci/gpu/gluon_w4_ws_probe.py run ${M_VALUES:-128 256 512 1024 2048 4096} 2>&1 \
  | grep -v Warn | tee $OUT/ws2.log | cut -c1-220 | tail -70
true
