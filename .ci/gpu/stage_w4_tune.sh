#!/usr/bin/env bash
# Device machine (carry .whl): the W4A16 kernels since git 865a6ce (16-bit magic-number dequantization in the
# tiled and skinny kernels, larger tiles, swap_ab) on the GPU: their tests (numerics on CUDA), a re-tune of
# M = 8..1024 (skinny, tiled, dequant + cuBLAS) for the Llama-3-70B, Llama-3-8B and Llama-2-7B shapes merged into
# the committed table -> $OUT/w4a16.json (rewritten after each shape: a time limit keeps what finished), then the
# kernel benchmark at those M with that table, one record per model (written after every layer).
# Budget: about 9 minutes; copy $OUT/w4a16.json to kernels/tuned/w4a16.json when it is better.
source .ci/gpu/env.sh || exit 1
SHAPES="8192x57344 8192x10240 28672x8192 8192x8192 4096x28672 4096x6144 14336x4096 4096x4096 4096x22016 4096x12288 11008x4096"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv,noheader
python3 -c "import torch, triton; print(torch.__version__, triton.__version__)"
timeout 90 python3 -m pytest -q -x tests/test_kernels_w4a16.py 2>&1 | grep -E "passed|failed|Error|assert" | tail -4
timeout 330 python3 -m kernels.w4a16_tune $OUT/w4a16.json --merge kernels/tuned/w4a16.json \
  --m 8 16 32 64 128 256 1024 --paths skinny tiled dequant --iters 10 --shapes $SHAPES 2>&1 \
  | tee $OUT/tune.log | grep -E "best|wrote|Error" | cut -c1-170
export QUANTBENCH_W4A16_TUNING=$OUT/w4a16.json
for model in llama-3-70b:70 llama-3-8b:50 llama-2-7b:50; do
  timeout ${model#*:} python3 -m harness.metrics.kernels $OUT --models ${model%:*} --m 16 64 256 1024 \
    --backends cublas_float16 triton_w4a16_g128 2>&1 | tee -a $OUT/bench.log | grep -E "record|gate_up" | cut -c1-110
done
