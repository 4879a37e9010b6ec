#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), fourteenth session (an H200), ~8 minutes: the W4A16 table tuned for
# this GPU at decode sizes, the frag path offered beside the entry in use (the H100's, same chip, where this GPU has
# none): M = 1-16 on the seven Llama shapes call 1 did not tune, M = 2, 4, 8 on its four
#   -> $OUT/w4a16.json (the committed table merged; commit once its entries pass their GPU test), $OUT/tune*.log
source .ci/gpu/env.sh || exit 1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
timeout ${TUNE1_S:-330} python3 -m kernels.w4a16_tune $OUT/w4a16.json --merge kernels/tuned/w4a16.json --paths frag \
  --m 1 2 4 8 16 --shapes 4096x28672 8192x10240 8192x8192 4096x22016 14336x4096 11008x4096 4096x12288 \
  > $OUT/tune1.log 2>&1
grep -E "best|wrote|Error" $OUT/tune1.log | cut -c1-240
timeout ${TUNE2_S:-150} python3 -m kernels.w4a16_tune $OUT/w4a16.json --paths frag --m 2 4 8 \
  --shapes 8192x57344 28672x8192 4096x6144 4096x4096 > $OUT/tune2.log 2>&1
grep -E "best|wrote|Error" $OUT/tune2.log | cut -c1-240
true
