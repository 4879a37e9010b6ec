#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), about 8 minutes: the W4A16 gemv with its next K-block loaded
# ahead (`pipeline`), tuned against the unpipelined tiles, then the batch-1 decode it gives:
#   1  gemv tests on the GPU (pipelined cases, and the PDL chain test)                                 ~40 s
#   2  gemv re-tune at M = 1 on the four Llama-2-7B shapes, pipelined candidates added -> /root/qb/w4a16.json
#   3  back-to-back timing of the decode GEMMs with that table (.ci/gpu/back_to_back.py)                ~45 s
#   4  compiled + fused decode at batch 1, split-KV attention: bf16, GPTQ, AWQ, one process each     <= 240 s
# Records are packed into $OUT/records.tgz (a call returns at most 8 files).
source .ci/gpu/env.sh || exit 1
timeout 120 python3 -m pytest -q tests/test_kernels_w4a16.py -k "gemv or programmatic" 2>&1 \
  | grep -E "passed|failed|^E |^FAILED" | tail -8
mkdir -p /root/qb
cp kernels/tuned/w4a16.json /root/qb/w4a16.json
timeout 200 python3 -m kernels.w4a16_tune /root/qb/w4a16.json --m 1 --paths gemv --iters 10 \
  --shapes 4096x4096 11008x4096 4096x12288 4096x22016 2>&1 | tee $OUT/w4a16_gemv_tune.log \
  | grep -E "best|wrote|Error" | cut -c1-240
cp /root/qb/w4a16.json $OUT/w4a16.json
export QUANTBENCH_W4A16_TUNING=/root/qb/w4a16.json
timeout 60 python3 .ci/gpu/back_to_back.py --models llama-2-7b --m 1 2>&1 | tee $OUT/back_to_back.log
bash .ci/gpu/stage_throughput.sh compile none,gptq,awq 240 'bench.throughput.batch_sizes=[1]' \
  model.fuse_projections=true 'bench.throughput.prefill_lens=[]' model.attn_implementation=split_kv \
  bench.throughput.profile_steps=10
tar -C $OUT -czf $OUT/records.tgz h100 && rm -rf $OUT/h100
