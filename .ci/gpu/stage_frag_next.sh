#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), about 9 minutes: what the seventh session left unmeasured.
#   1  the W4A16 kernel tests on the GPU ($OUT/tests.log)                                         ~90 s
#   2  frag configs at M = 2 against each shape's committed entry (the M = 2 gemv), merged into the committed
#      table -> $OUT/w4a16.json, used by the steps below                                          ~80 s
#   3  M = 2 on every shape: fp16 cuBLAS, symmetric and zero-code W4A16 (zero-code layers held to a gemv tile that
#      does not spill, or the new frag entries)                                                  ~60 s
#   4  the layers the seventh session's benchmark did not record: 70B down, 7B gate_up and down  <= 260 s
source .ci/gpu/env.sh || exit 1
timeout 170 python3 -m pytest -q tests/test_kernels_w4a16.py > $OUT/tests.log 2>&1
grep -E "passed|failed|^E |^FAILED" $OUT/tests.log | tail -8
SHAPES="8192x57344 28672x8192 8192x10240 8192x8192 4096x28672 14336x4096 4096x6144 4096x4096 4096x22016 11008x4096 4096x12288"
timeout 150 python3 -m kernels.w4a16_tune $OUT/w4a16.json --merge kernels/tuned/w4a16.json --paths frag --m 2 \
  --shapes $SHAPES 2>&1 | tee $OUT/tune_m2.log | grep -E "best|wrote|Error" | cut -c1-150
[ -f $OUT/w4a16.json ] && export QUANTBENCH_W4A16_TUNING=$OUT/w4a16.json
timeout 120 python3 -m harness bench=kernels gpu=h100 "bench.kernels.models=[llama-3-70b,llama-3-8b,llama-2-7b]" \
  "bench.kernels.m_values=[2]" "bench.kernels.backends=[cublas_bfloat16,cublas_float16,triton_w4a16_g128,triton_w4a16_g128_zp]" \
  results_dir=$OUT/h100 progress=false 2>&1 | tee $OUT/kernels_m2.log | grep -E "record|Error|M=    2 " | cut -c1-120
RUNS="llama-3-70b:down:140 llama-2-7b:gate_up,down:120" TESTS=skip \
BACKENDS="cublas_bfloat16 cublas_float16 triton_w4a16_g128 triton_w4a16_g128_zp torch_tinygemm_int4_g128 gemlite_a16w4_g128 scaled_mm_tensor triton_fp8_block128" \
  bash .ci/gpu/stage_kernel_bench.sh
true
