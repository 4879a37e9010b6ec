#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), eleventh session: the Gluon block-FP8 GEMM (kernels/fp8_gluon.py)
#   1  its GPU tests and the FP8 kernel tests (tests/test_kernels_fp8_gluon.py, tests/test_kernels_fp8.py)
#      -> $OUT/tests.log
#   2  the kernel benchmark's block-FP8 rows beside cuBLAS bf16 and _scaled_mm per tensor on every Llama shape and
#      M (the Triton and the Gluon kernel as separate backends), clock and power with each point
#      -> $OUT/records.tar, $OUT/fp8_kernels.log
source .ci/gpu/env.sh || exit 1
nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv,noheader
timeout 300 python3 -m pytest -q tests/test_kernels_fp8_gluon.py tests/test_kernels_fp8.py > $OUT/tests.log 2>&1
grep -E "passed|failed|^E  |^FAILED|rel err" $OUT/tests.log | cut -c1-200 | tail -24
timeout 240 python3 -m harness bench=kernels gpu=h100 \
  "bench.kernels.backends=[cublas_bfloat16,scaled_mm_tensor,triton_fp8_block128,gluon_fp8_block128]" \
  results_dir=$OUT/h100 progress=false > $OUT/fp8_kernels.log 2>&1
grep -E "record|Error|error" $OUT/fp8_kernels.log | cut -c1-200 | tail -5
tar -C $OUT -cf $OUT/records.tar h100 && rm -rf $OUT/h100
true
