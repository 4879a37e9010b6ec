#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), about 5 minutes: the split-KV attention's new launch shape
# (one-warp programs over 16-key blocks, ~8 per SM; chosen from .ci/gpu/attention_sweep.py, call 31):
#   1  its tests on the GPU (PDL included)                                                              ~30 s
#   2  against SDPA at decode (.ci/gpu/attention_bench.py)                                               ~40 s
#   3  compiled + fused batch-1 decode with it and PDL: none/gptq/awq, one process each, profiled    <= 240 s
# Records are packed into $OUT/records.tgz (a call returns at most 8 files).
source .ci/gpu/env.sh || exit 1
timeout 90 python3 -m pytest -q tests/test_decode_attention.py 2>&1 | grep -E "passed|failed|^E |^FAILED" | tail -6
timeout 90 python3 .ci/gpu/attention_bench.py 2>&1 | tee $OUT/attention_bench.log
bash .ci/gpu/stage_throughput.sh compile ${METHODS:-none,gptq,awq} ${LIMIT:-250} 'bench.throughput.batch_sizes=[1]' \
  model.fuse_projections=true 'bench.throughput.prefill_lens=[]' model.attn_implementation=split_kv \
  bench.throughput.pdl=true bench.throughput.profile_steps=10
tar -C $OUT -czf $OUT/records.tgz h100 && rm -rf $OUT/h100
