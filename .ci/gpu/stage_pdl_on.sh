#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), about 8 minutes: PDL without the gemv's L2 prefetch (the
# default since call 29 took PDL apart), the split-KV attention launched with PDL too:
#   1  PDL tests on the GPU: chained gemvs, the attention after the kernel writing its query            ~20 s
#   2  compiled + fused batch-1 decode, split-KV attention, none/gptq/awq x pdl true/false, one process
#      each (about 65 s a job), profiled by category                                                   <= 420 s
# Records are packed into $OUT/records.tgz (a call returns at most 8 files).
source .ci/gpu/env.sh || exit 1
timeout 90 python3 -m pytest -q tests/test_kernels_w4a16.py tests/test_decode_attention.py -k "programmatic" 2>&1 \
  | grep -E "passed|failed|^E |^FAILED" | tail -6
bash .ci/gpu/stage_throughput.sh compile ${METHODS:-none,gptq,awq} ${LIMIT:-440} 'bench.throughput.batch_sizes=[1]' \
  model.fuse_projections=true 'bench.throughput.prefill_lens=[]' model.attn_implementation=split_kv \
  bench.throughput.pdl=true,false bench.throughput.profile_steps=10
tar -C $OUT -czf $OUT/records.tgz h100 && rm -rf $OUT/h100
