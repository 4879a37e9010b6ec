#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent): the split-K FP8 GEMV and fast accumulation, about 7 minutes:
#   1  FP8 kernel tests on the GPU (GEMV against the W8A8 reference, _scaled_mm with/without fast accum);
#      the W4A16 split-K tests (the workspace moved to kernels/splitk.py)                              ~100 s
#   2  tune the GEMV (M = 1, 2, 4) on the Llama-2-7B and Llama-3-8B shapes into /root/qb/fp8.json       <= 200 s
#   3  FP8 kernels at M = 1, 2, 4, 2048 on Llama-2-7B: GEMV and _scaled_mm (promoted / fast accum) and
#      bf16 cuBLAS                                                                                       ~60 s
#   4  back-to-back timing of decode GEMMs (.ci/gpu/back_to_back.py)                                    ~60 s
source .ci/gpu/env.sh || exit 1
timeout 100 python3 -m pytest -q tests/test_kernels_fp8.py 2>&1 | grep -E "passed|failed|^E " | tail -6
timeout 60 python3 -m pytest -q tests/test_kernels_w4a16.py -k "split_k or outgrown or gemv" 2>&1 | tail -1
cp kernels/tuned/fp8.json /root/qb/fp8.json
timeout 220 python3 -m kernels.fp8_tune /root/qb/fp8.json --kinds gemv --m 1 2 4 --budget-s 200 \
  --shapes 4096x12288 4096x4096 4096x22016 11008x4096 4096x6144 4096x28672 14336x4096 2>&1 \
  | grep -v "^  " | tee $OUT/fp8_gemv_tune.log
cp /root/qb/fp8.json $OUT/fp8.json
export QUANTBENCH_FP8_TUNING=/root/qb/fp8.json
timeout 100 python3 -m harness.metrics.kernels $OUT --models llama-2-7b --m 1 2 4 2048 \
  --backends cublas_bfloat16 scaled_mm_tensor scaled_mm_tensor_fastacc triton_fp8_gemv_tensor 2>&1 \
  | tee $OUT/bench.log | grep -E "M= +(1|2048) " | cut -c1-100
timeout 90 python3 .ci/gpu/back_to_back.py --models llama-2-7b --m 1 2>&1 | tee $OUT/back_to_back.log
