#!/usr/bin/env bash
# Device machine (carry .whl), one call with the committed tuning tables (kernels/tuned/w4a16.json re-tuned at
# M = 1 (Llama-2-7B gemv) and 8-1024, kernels/tuned/fp8.json tuned; this session's H100 runs):
#   1  end-to-end, Llama-2-7B shape, none/fp8/gptq/awq, CUDA-graph decode at batch 1/8/32/128 and the 2048-token
#      prefill replayed from a CUDA graph (prefill_mode=auto)                                          ~3 min
#   2  the kernel benchmark on Llama-3-70B and Llama-2-7B at every M, without the act-order and row-wise
#      backends (one record per model, written after every layer)                                    ~2 x 2.5 min
source .ci/gpu/env.sh || exit 1
bash .ci/gpu/stage_throughput.sh cuda_graph none,fp8,gptq,awq 240 'bench.throughput.batch_sizes=[1,8,32,128]'
for model in llama-3-70b llama-2-7b; do
  timeout 140 python3 -m harness.metrics.kernels $OUT --models $model --m 1 2 4 8 16 32 64 128 256 1024 4096 \
    --backends cublas_float16 cublas_bfloat16 triton_w4a16_g128 torch_tinygemm_int4_g128 gemlite_a16w4_g128 \
    scaled_mm_tensor triton_fp8_block128 2>&1 | tee -a $OUT/bench.log | grep -E "record|roofline" | cut -c1-150
done
