#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), fourteenth session: decode W4A16 on the 11 Llama shapes at M = 1 and
# 16 (.ci/gpu/gluon_w4_decode_probe.py): the tuned path, the tuned frag entry with scale_after, frag tiles ($FRAG)
# and the Gluon decode tiles ($TILES), cuBLAS fp16, same run -> $OUT/decode.log; then GPU tests -> $OUT/tests.log
source .ci/gpu/env.sh || exit 1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
export TILES=${TILES:-1:1:80 2:1:80 2:2:80 2:4:80 2:1:168} FRAG=${FRAG:-16:256:8:4:1:1:1 16:256:4:4:2:1:1}
timeout ${PROBE_S:-300} python3 .ci/gpu/gluon_w4_decode_probe.py ${PROBE_M:-1 16} 2>&1 | grep -v Warn | tee $OUT/decode.log | cut -c1-400
timeout 200 python3 -m pytest -q tests/test_kernels_w4a16_gluon.py "tests/test_kernels_w4a16.py::test_frag_scale_after_matches_float64" > $OUT/tests.log 2>&1
grep -E "passed|failed|^E  |^FAILED" $OUT/tests.log | cut -c1-200 | tail -8
true
