#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), fourteenth session: the Gluon W4A16 decode tiles (16 tokens,
# split-K) against the tuned path and cuBLAS fp16 on the 11 Llama shapes at M = 1 and 16
# (.ci/gpu/gluon_w4_decode_probe.py) -> $OUT/decode.log; then the Gluon GPU tests -> $OUT/tests.log
source .ci/gpu/env.sh || exit 1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
timeout ${PROBE_S:-330} python3 .ci/gpu/gluon_w4_decode_probe.py ${PROBE_M:-1 16} 2>&1 | grep -v Warn | tee $OUT/decode.log | cut -c1-260
timeout 150 python3 -m pytest -q -x tests/test_kernels_w4a16_gluon.py > $OUT/tests.log 2>&1
grep -E "passed|failed|^E  |^FAILED" $OUT/tests.log | cut -c1-200 | tail -8
true
