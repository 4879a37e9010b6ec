#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), about 8 minutes: what was built after the fifth 2026-11-27
# session's device time ran out, then the batch-1 decode of every method with split-KV attention and PDL:
#   1  GPU-only tests changed or added since call 33: the attention and FP8 gemv under PDL after a kernel that
#      lets them launch early, the widened GLU epilogue test                                          ~40 s
#   2  compiled + fused batch-1 decode, split_kv, PDL (10 timed repeats a point now): none/gptq/awq/fp8, one
#      process each (about 65-110 s a job)                                                            <= 440 s
# Records are packed into $OUT/records.tgz (a call returns at most 8 files).
source .ci/gpu/env.sh || exit 1
timeout 120 python3 -m pytest -q tests/test_decode_attention.py tests/test_kernels_fp8.py tests/test_kernels_w4a16.py \
  -k "programmatic or glu" 2>&1 | grep -E "passed|failed|^E |^FAILED" | tail -8
bash .ci/gpu/stage_throughput.sh compile ${METHODS:-none,gptq,awq,fp8} ${LIMIT:-440} 'bench.throughput.batch_sizes=[1]' \
  model.fuse_projections=true 'bench.throughput.prefill_lens=[]' model.attn_implementation=split_kv \
  bench.throughput.pdl=true bench.throughput.profile_steps=10
tar -C $OUT -czf $OUT/records.tgz h100 && rm -rf $OUT/h100
