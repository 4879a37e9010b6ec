#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), the first measurements of what the 2026-11-27 session built after
# its device time ran out (results/h100/README.md, "Not measured yet"). About 8 minutes:
#   1  the FP8 kernel tests on the GPU (the one-launch GEMV against the W8A8 reference)                    ~45 s
#   2  FP8 kernels at M = 1, 2, 4 on Llama-2-7B and Llama-3-70B: the GEMV (triton_fp8_gemv_tensor) against
#      _scaled_mm per tensor (activation quantization timed in both) and bf16 cuBLAS                   <= 100 s
#   3  decode at batch 1 and 8 through CUDA graphs: bf16, FP8 as committed, FP8 with method.backend=gemv,
#      and the 2048-token prefill compiled (prefill_mode=compile) for all three                        <= 300 s
source .ci/gpu/env.sh || exit 1
timeout 90 python3 -m pytest -q tests/test_kernels_fp8.py 2>&1 | grep -E "passed|failed|^E " | tail -6
for model in llama-2-7b llama-3-70b; do
  timeout 50 python3 -m harness.metrics.kernels $OUT --models $model --m 1 2 4 \
    --backends cublas_bfloat16 scaled_mm_tensor triton_fp8_gemv_tensor 2>&1 | tee -a $OUT/bench.log \
    | grep -E "M= +[124] " | cut -c1-100
done
P='bench.throughput.prefill_mode=compile'
bash .ci/gpu/stage_throughput.sh cuda_graph none,fp8 200 'bench.throughput.batch_sizes=[1,8]' $P
bash .ci/gpu/stage_throughput.sh cuda_graph fp8 120 'bench.throughput.batch_sizes=[1,8]' $P method.backend=gemv
