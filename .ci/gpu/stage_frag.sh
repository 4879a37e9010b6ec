#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), about 9 minutes: the fragment-order W4A16 kernel (path frag)
#   1  the W4A16 kernel tests on the GPU (the frag path's inline PTX runs only there)            ~80 s
#   2  its configs timed against each shape's committed entry (timed first, in the same process), for
#      M = 4 .. 4096 on the 11 Llama shapes, merged into the committed table -> $OUT/w4a16.json  <= 380 s
source .ci/gpu/env.sh || exit 1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem --format=csv,noheader
timeout 170 python3 -m pytest -q tests/test_kernels_w4a16.py 2>&1 | grep -E "passed|failed|^E |^FAILED" | tail -8
SHAPES="8192x57344 28672x8192 8192x10240 8192x8192 4096x28672 14336x4096 4096x6144 4096x4096 4096x22016 11008x4096 4096x12288"
timeout 380 python3 -m kernels.w4a16_tune $OUT/w4a16.json --merge kernels/tuned/w4a16.json --paths frag \
  --m 4 8 16 32 64 128 256 512 1024 2048 4096 --shapes $SHAPES 2>&1 | tee $OUT/tune.log \
  | grep -E "best|wrote|Error" | cut -c1-150
cp $OUT/w4a16.json /root/qb/w4a16.json 2>/dev/null
true
