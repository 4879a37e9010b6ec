#!/usr/bin/env bash
# Device machine: tune the Triton FP8 GEMMs (kernels.fp8_tune) on the Llama shapes, table -> $OUT/fp8.json
# (copy it to kernels/tuned/fp8.json to commit it). ~4.5 minutes in all:
#   the FP8 kernel tests on the GPU (the block-scaled GEMM's new tiles against the float64 reference) ~20 s
#   1  block-scaled (128x128 blocks) at M = 4096 and 1024 on every shape, the target of this table   <= 120 s
#   2  block-scaled at M = 128 and 16                                                                  <= 45 s
#   3  per-tensor/per-row scales at M = 4096, 1024, 128, 16                                            <= 45 s
#   then the kernel benchmark's FP8 rows on Llama-3-70B at M = 1024 and 4096 with the new table      <= 45 s
# Each tune step has its own --budget-s (stops starting candidates, keeps and writes what it measured) under a
# hard timeout, and merges into the previous step's table, so a step cut short loses nothing already written.
source .ci/gpu/env.sh || exit 1
SHAPES="8192x57344 8192x10240 28672x8192 8192x8192 4096x28672 4096x6144 14336x4096 4096x4096 4096x22016 4096x12288 11008x4096"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv,noheader
python3 -c "import torch, triton; print(torch.__version__, triton.__version__)" 2>&1 | tail -1
timeout 90 python3 -m pytest -q -x tests/test_kernels_fp8.py 2>&1 | grep -E "passed|failed|Error|assert" | tail -4
T=$OUT/fp8.json
[ -f kernels/tuned/fp8.json ] && cp kernels/tuned/fp8.json $T
timeout 140 python3 -m kernels.fp8_tune $T --kinds block --m 4096 1024 --budget-s 115 --shapes $SHAPES 2>&1 \
  | tee $OUT/tune.log | grep -E "best|wrote|budget|Error" | cut -c1-190
timeout 60 python3 -m kernels.fp8_tune $T --kinds block --m 128 16 --budget-s 42 --shapes $SHAPES 2>&1 \
  | tee -a $OUT/tune.log | grep -E "best|wrote|budget|Error" | cut -c1-190
timeout 60 python3 -m kernels.fp8_tune $T --kinds rows --m 4096 1024 128 16 --budget-s 42 --shapes $SHAPES 2>&1 \
  | tee -a $OUT/tune.log | grep -E "best|wrote|budget|Error" | cut -c1-190
export QUANTBENCH_FP8_TUNING=$T
timeout 60 python3 -m harness.metrics.kernels $OUT --models llama-3-70b --m 1024 4096 \
  --backends cublas_bfloat16 scaled_mm_tensor triton_fp8_block128 2>&1 | tee $OUT/bench.log \
  | grep -E "record|roofline|TFLOP" | cut -c1-140 | tail -30
ls -la $OUT
