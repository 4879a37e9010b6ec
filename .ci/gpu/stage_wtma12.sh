#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), twelfth session: the Gluon W4A16 kernels with W's words and scales
# brought by the loader's TMA (this tree) against the same kernels loading them with prefetched global loads
# (.whl/old_w4a16_gluon.py: git 1c6abca's module), both consumer counts, beside cuBLAS fp16, 11 Llama shapes
#   1  the Gluon and tuned-entry GPU tests of this tree -> $OUT/tests.log
#   2  the probe -> $OUT/wtma.log
source .ci/gpu/env.sh || exit 1
SHAPES="8192x57344 28672x8192 8192x10240 8192x8192 4096x28672 14336x4096 4096x6144 4096x4096 4096x22016 11008x4096 4096x12288"
timeout 170 python3 -m pytest -q tests/test_kernels_w4a16_gluon.py tests/test_kernels_w4a16.py -k "gluon or every_tuned" > $OUT/tests.log 2>&1
grep -E "passed|failed|^E  |^FAILED" $OUT/tests.log | cut -c1-200 | tail -8
OLD_GLUON=.whl/old_w4a16_gluon.py SHAPES="$SHAPES" timeout 300 python3 .ci/gpu/gluon_w4_ws_probe.py run \
  ${M_VALUES:-128 256 512 1024 4096} 2>&1 | grep -v Warn | tee $OUT/wtma.log | cut -c1-250 | tail -60
true
