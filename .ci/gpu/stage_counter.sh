#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), about 7 minutes: one shared KV-cache length counter per decode
# step (harness.metrics.decode.share_cache_length) and the W4A16 zero forms, end to end:
#   1  the zero-form kernel tests (no split-K now) and the decoder tests on the GPU                   ~40 s
#   2  compiled + fused batch-1 decode, split_kv, PDL: none/gptq/awq/fp8, one process each            <= 420 s
source .ci/gpu/env.sh || exit 1
timeout 100 python3 -m pytest -q tests/test_kernels_w4a16.py -k "zero_codes" tests/test_throughput.py \
  -k "zero_codes or shared_cache or sliding or hf_dynamic" 2>&1 | grep -E "passed|failed|^E |^FAILED" | tail -6
bash .ci/gpu/stage_throughput.sh compile ${METHODS:-none,gptq,awq,fp8} ${LIMIT:-420} 'bench.throughput.batch_sizes=[1]' \
  model.fuse_projections=true 'bench.throughput.prefill_lens=[]' model.attn_implementation=split_kv \
  bench.throughput.pdl=true bench.throughput.profile_steps=10
tar -C $OUT -czf $OUT/records.tgz h100 && rm -rf $OUT/h100
