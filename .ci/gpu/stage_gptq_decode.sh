#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), about 6 minutes: GPTQ/AWQ batch-1 decode after the W4A16 gemv
# re-tune with the wider candidate set (64/128-column and 2-warp tiles, split 64, up to 24 programs per SM):
#   1  gemv re-tune at M = 1 on the four Llama-2-7B shapes -> /root/qb/w4a16.json                      ~80 s
#   2  back-to-back timing of the decode GEMMs with those tables (.ci/gpu/back_to_back.py)              ~45 s
#   3  compiled + fused decode at batch 1: bf16, GPTQ, AWQ                                           <= 240 s
source .ci/gpu/env.sh || exit 1
mkdir -p /root/qb
cp kernels/tuned/w4a16.json /root/qb/w4a16.json
timeout 100 python3 -m kernels.w4a16_tune /root/qb/w4a16.json --m 1 --paths gemv --iters 10 \
  --shapes 4096x4096 11008x4096 4096x12288 4096x22016 2>&1 | tee $OUT/w4a16_gemv_tune.log \
  | grep -E "best|wrote|Error" | cut -c1-220
cp /root/qb/w4a16.json $OUT/w4a16.json
export QUANTBENCH_W4A16_TUNING=/root/qb/w4a16.json
timeout 60 python3 .ci/gpu/back_to_back.py --models llama-2-7b --m 1 2>&1 | tee $OUT/back_to_back.log
bash .ci/gpu/stage_throughput.sh compile none,gptq,awq 240 'bench.throughput.batch_sizes=[1]' \
  model.fuse_projections=true 'bench.throughput.prefill_lens=[]'
