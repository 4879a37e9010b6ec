#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), about 6 minutes (eighth session, call 10): split-K for the frag
# decode tile where the tiles outnumber the SMs but fill 0.85 of the slots (FRAG_TAIL_TILE, Llama-3-70B gate_up).
#   1  graph-timed probes: 70B gate_up at M = 1 and 16, split 1, 2, 4, 8, x copied or permuted        ~40 s
#   2  the tuner's frag candidates at M = 1-16 on the 11 shapes -> $OUT/w4a16.json                    <= 260 s
#   3  the kernel benchmark at M = 1-16 with that table: cuBLAS bf16/fp16, our W4A16 (symmetric and zero
#      codes), all 12 layers -> $OUT/records.tar                                                        <= 150 s
source .ci/gpu/env.sh || exit 1
timeout 80 python3 .ci/gpu/frag_probe.py --time 8192x57344 1:16:256:4:3:1 1:16:256:4:3:2 1:16:256:4:3:4 \
  1:16:256:4:3:8 1:16:256:4:3:8:1 16:16:256:4:3:1 16:16:256:4:3:2 16:16:256:4:3:4 16:16:256:4:3:8 16:16:256:4:3:8:1
SHAPES="8192x57344 28672x8192 8192x10240 8192x8192 4096x28672 14336x4096 4096x6144 4096x4096 4096x22016 11008x4096 4096x12288"
timeout 260 python3 -m kernels.w4a16_tune $OUT/w4a16.json --merge kernels/tuned/w4a16.json --paths frag \
  --m 1 2 4 8 16 --shapes $SHAPES 2>&1 | tee $OUT/tune_decode.log | grep -E "best|wrote|Error" | cut -c1-200
[ -f $OUT/w4a16.json ] && export QUANTBENCH_W4A16_TUNING=$OUT/w4a16.json
timeout 150 python3 -m harness bench=kernels gpu=h100 "bench.kernels.models=[llama-3-70b,llama-3-8b,llama-2-7b]" \
  "bench.kernels.m_values=[1,2,4,8,16]" \
  "bench.kernels.backends=[cublas_bfloat16,cublas_float16,triton_w4a16_g128,triton_w4a16_g128_zp]" \
  results_dir=$OUT/h100 progress=false 2>&1 | tee $OUT/kernels_decode.log | grep -E "record|Error|gate_up .*M= *(1|16) " | cut -c1-120
tar -C $OUT -cf $OUT/records.tar h100 && rm -rf $OUT/h100
true
