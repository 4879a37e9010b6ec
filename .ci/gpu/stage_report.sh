#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), about 4 minutes, with the committed tables of this session:
#   1  kernels at decode sizes (M = 1-16) on Llama-2-7B: ours (W4A16, FP8 GEMV) beside cuBLAS fp16/bf16,
#      tinygemm, gemlite and _scaled_mm                                                                 ~100 s
#   2  CUDA-graph decode at batch 1, 8, 32, 128 for bf16 and FP8 (now fast accum, GEMV at M = 1)         <= 150 s
source .ci/gpu/env.sh || exit 1
timeout 110 python3 -m harness.metrics.kernels $OUT --models llama-2-7b --m 1 2 4 8 16 \
  --backends cublas_float16 cublas_bfloat16 triton_w4a16_g128 torch_tinygemm_int4_g128 gemlite_a16w4_g128 \
  scaled_mm_tensor triton_fp8_gemv_tensor 2>&1 | tee $OUT/bench.log | grep -E "M= +1 " | cut -c1-100
bash .ci/gpu/stage_throughput.sh cuda_graph none,fp8 150 'bench.throughput.batch_sizes=[1,8,32,128]' \
  'bench.throughput.prefill_lens=[]'
