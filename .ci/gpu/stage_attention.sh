#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), about 7 minutes: the split-KV decode attention
# (model.attn_implementation=split_kv), built after the third 2026-11-27 session's device time ran out:
#   1  its tests on the GPU                                                                              ~20 s
#   2  the kernel against SDPA (cuDNN) at decode (.ci/gpu/attention_bench.py)                            ~40 s
#   3  compiled + fused batch-1 decode, bf16 and GPTQ, SDPA and split_kv in one multirun, each step
#      profiled by category (bench.throughput.profile_steps: GEMM, attention, other)                   <= 330 s
source .ci/gpu/env.sh || exit 1
timeout 60 python3 -m pytest -q tests/test_decode_attention.py 2>&1 | grep -E "passed|failed|^E " | tail -4
timeout 90 python3 .ci/gpu/attention_bench.py 2>&1 | tee $OUT/attention_bench.log
bash .ci/gpu/stage_throughput.sh compile none,gptq 330 'bench.throughput.batch_sizes=[1]' \
  model.fuse_projections=true 'bench.throughput.prefill_lens=[]' model.attn_implementation=sdpa,split_kv \
  bench.throughput.profile_steps=10
