#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), about 8 minutes: W4A16 zero points as layers now hold them
# (none for symmetric layers, uint8 codes for asymmetric ones, instead of fp16/fp32 pre-multiplied zs):
#   1  the W4A16 kernel tests on the GPU (triton 3.6), the new zero-form tests included               ~60 s
#   2  back to back, Llama-2-7B shapes, M = 1: bf16 cuBLAS and our gemv with no zeros / uint8 codes / fp16
#      pre-multiplied zeros (the old form), one run                                                  ~60 s
#   3  compiled + fused batch-1 decode, split_kv, PDL: none/gptq/awq, one process each               <= 330 s
source .ci/gpu/env.sh || exit 1
timeout 150 python3 -m pytest -q tests/test_kernels_w4a16.py 2>&1 | grep -E "passed|failed|^E |^FAILED" | tail -8
timeout 120 python3 .ci/gpu/back_to_back.py --m 1 --backends cublas_bfloat16 triton_w4a16_g128 \
  triton_w4a16_g128_zp triton_w4a16_g128_zs16 2>&1 | tee $OUT/back_to_back.log | grep -v Warning
bash .ci/gpu/stage_throughput.sh compile ${METHODS:-none,gptq,awq} ${LIMIT:-330} 'bench.throughput.batch_sizes=[1]' \
  model.fuse_projections=true 'bench.throughput.prefill_lens=[]' model.attn_implementation=split_kv \
  bench.throughput.pdl=true bench.throughput.profile_steps=10
tar -C $OUT -czf $OUT/records.tgz h100 && rm -rf $OUT/h100
