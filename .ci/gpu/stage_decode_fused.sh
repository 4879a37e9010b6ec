#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), about 8 minutes: issue 7's batch-1 decode and 2048-token prefill
# with this session's kernel work, compiled and fused (the setup of the best numbers so far):
#   1  W4A16 gemv re-tune at M = 1 on the narrow Llama-2-7B shapes (o, down) with the wider candidate set
#      (128-column and 2-warp tiles, split 64) -> /root/qb/w4a16.json                                    ~60 s
#   2  FP8 GEMV re-tune at M = 1 on the Llama-2-7B shapes, timing _scaled_mm beside it (fp8_linear's auto
#      takes the GEMV where it measured faster) -> /root/qb/fp8.json                                    ~70 s
#   3  compiled + fused decode at batch 1 and compiled 2048-token prefill: bf16, GPTQ, FP8 (fast accum)  <= 330 s
source .ci/gpu/env.sh || exit 1
mkdir -p /root/qb
cp kernels/tuned/w4a16.json /root/qb/w4a16.json
timeout 75 python3 -m kernels.w4a16_tune /root/qb/w4a16.json --m 1 --paths gemv --iters 10 \
  --shapes 4096x4096 11008x4096 2>&1 | tee $OUT/w4a16_gemv_tune.log | grep -E "best|wrote|Error" | cut -c1-220
cp /root/qb/w4a16.json $OUT/w4a16.json
cp kernels/tuned/fp8.json /root/qb/fp8.json
timeout 80 python3 -m kernels.fp8_tune /root/qb/fp8.json --kinds gemv --m 1 --iters 10 \
  --shapes 4096x12288 4096x4096 4096x22016 11008x4096 2>&1 | grep -v "^  " | tee $OUT/fp8_gemv_tune.log
cp /root/qb/fp8.json $OUT/fp8.json
bash .ci/gpu/stage_throughput.sh compile none,gptq,fp8 330 'bench.throughput.batch_sizes=[1]' \
  model.fuse_projections=true bench.throughput.prefill_mode=compile
