#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), about 5 minutes: why AWQ (uint8 zero codes) decoded 8% slower
# than GPTQ (no zeros) with call 38's back-to-back table while it was not slower with the committed one:
#   1  the table's entries back to back under PDL, zeros none vs codes: call 38's table, then the committed one
#   2  compiled + fused batch-1 decode (split_kv, PDL) of gptq/awq again with call 38's table
source .ci/gpu/env.sh || exit 1
D=results/h100-diagnostics/20261127-gemv-b2b
for table in $D/w4a16_call38.json kernels/tuned/w4a16.json; do
  echo "== $table"
  QUANTBENCH_W4A16_TUNING=$table timeout 120 python3 .ci/gpu/gemv_b2b_tune.py --table-only --zeros none codes 2>&1 \
    | grep "table's entry"
done
mkdir -p /root/qb && cp $D/w4a16_call38.json /root/qb/w4a16.json
bash .ci/gpu/stage_throughput.sh compile ${METHODS:-awq,gptq} ${LIMIT:-200} 'bench.throughput.batch_sizes=[1]' \
  model.fuse_projections=true 'bench.throughput.prefill_lens=[]' model.attn_implementation=split_kv \
  bench.throughput.pdl=true bench.throughput.profile_steps=10
tar -C $OUT -czf $OUT/records.tgz h100 && rm -rf $OUT/h100
