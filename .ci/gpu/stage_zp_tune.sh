#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), about 8 minutes: tune the M = 1 gemv of the Llama-2-7B shapes for
# layers with uint8 zero codes (AWQ) back to back under PDL, on top of call 38's table (symmetric entries), then
# the compiled + fused batch-1 decode (split_kv, PDL) of none/gptq/awq with the result.
source .ci/gpu/env.sh || exit 1
mkdir -p /root/qb && cp results/h100-diagnostics/20261127-gemv-b2b/w4a16_call38.json /root/qb/w4a16.json
QUANTBENCH_W4A16_TUNING=/root/qb/w4a16.json timeout 220 python3 .ci/gpu/gemv_b2b_tune.py --zeros codes \
  --out /root/qb/w4a16_zp.json 2>&1 | tee $OUT/b2b_tune.log | grep -E "table's entry|wrote"
cp /root/qb/w4a16_zp.json /root/qb/w4a16.json && cp /root/qb/w4a16.json $OUT/w4a16_b2b.json
bash .ci/gpu/stage_throughput.sh compile ${METHODS:-none,gptq,awq} ${LIMIT:-300} 'bench.throughput.batch_sizes=[1]' \
  model.fuse_projections=true 'bench.throughput.prefill_lens=[]' model.attn_implementation=split_kv \
  bench.throughput.pdl=true bench.throughput.profile_steps=10
tar -C $OUT -czf $OUT/records.tgz h100 && rm -rf $OUT/h100
