#!/usr/bin/env bash
# Device machine (carry .whl): the W4A16 kernel tests on CUDA (all, not stopping at a failure), then a re-tune of
# M = 128, 256, 1024 (tiled vs dequantize + cuBLAS; the dequant kernel failed to compile on triton 3.6 before git
# 1a0b0c4, so the first re-tune of this session could not pick it) over the Llama shapes, merged into the
# committed table -> $OUT/w4a16.json and /root/qb/w4a16.json (read by later calls on this warm machine). ~2 min.
source .ci/gpu/env.sh || exit 1
SHAPES="4096x12288 4096x4096 4096x22016 11008x4096 8192x57344 8192x10240 28672x8192 8192x8192 4096x28672 4096x6144 14336x4096"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv,noheader
timeout 120 python3 -m pytest -q tests/test_kernels_w4a16.py 2>&1 | grep -E "passed|failed|Error|^E " | tail -8
T=$OUT/w4a16.json
cp kernels/tuned/w4a16.json $T
timeout 150 python3 -m kernels.w4a16_tune $T --m 128 256 1024 --paths tiled dequant --iters 10 --shapes $SHAPES 2>&1 \
  | tee $OUT/tune.log | grep -E "best|wrote|Error" | cut -c1-170
mkdir -p /root/qb && cp $T /root/qb/w4a16.json
