#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), about 8 minutes: re-time the M = 1 gemv configs of the
# Llama-2-7B shapes back to back under PDL (.ci/gpu/gemv_b2b_tune.py, as the decode step runs them; the committed
# table was timed as lone replays), then the compiled + fused batch-1 decode (split_kv, PDL) of none/gptq/awq
# with that table ($QUANTBENCH_W4A16_TUNING; each record's env.tuning names it and its hash).
source .ci/gpu/env.sh || exit 1
mkdir -p /root/qb
timeout 240 python3 .ci/gpu/gemv_b2b_tune.py --out /root/qb/w4a16.json 2>&1 | tee $OUT/b2b_tune.log | grep -v Warning
cp /root/qb/w4a16.json $OUT/w4a16_b2b.json
bash .ci/gpu/stage_throughput.sh compile ${METHODS:-none,gptq,awq} ${LIMIT:-300} 'bench.throughput.batch_sizes=[1]' \
  model.fuse_projections=true 'bench.throughput.prefill_lens=[]' model.attn_implementation=split_kv \
  bench.throughput.pdl=true bench.throughput.profile_steps=10
tar -C $OUT -czf $OUT/records.tgz h100 && rm -rf $OUT/h100
