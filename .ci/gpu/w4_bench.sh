#!/usr/bin/env bash
# Device machine, called by the stage scripts (env.sh sourced): optionally re-tune the frag path at TUNE_M on the
# 11 Llama shapes (merged into the committed table -> $OUT/w4a16.json, used below), then the kernel benchmark at
# M_VALUES: cuBLAS bf16/fp16 and our W4A16, symmetric and with zero codes, all 12 layers -> $OUT/records.tar.
# TUNE_TIMEOUT / BENCH_TIMEOUT: seconds for each step (260 / 240); NO_BENCH=1: tune only; GPU: the gpu config (h100).
SHAPES="8192x57344 28672x8192 8192x10240 8192x8192 4096x28672 14336x4096 4096x6144 4096x4096 4096x22016 11008x4096 4096x12288"
if [ -n "${TUNE_M:-}" ]; then
  timeout ${TUNE_TIMEOUT:-260} python3 -m kernels.w4a16_tune $OUT/w4a16.json --merge kernels/tuned/w4a16.json --paths frag \
    --m $TUNE_M --shapes $SHAPES 2>&1 | tee $OUT/tune_decode.log | grep -E "best|wrote|Error" | cut -c1-200
  [ -f $OUT/w4a16.json ] && export QUANTBENCH_W4A16_TUNING=$OUT/w4a16.json
fi
[ -n "${NO_BENCH:-}" ] && exit 0
timeout ${BENCH_TIMEOUT:-240} python3 -m harness bench=kernels gpu=${GPU:-h100} "bench.kernels.models=[llama-3-70b,llama-3-8b,llama-2-7b]" \
  "bench.kernels.m_values=[${M_VALUES:-1,2,4,8,16}]" \
  "bench.kernels.backends=[cublas_bfloat16,cublas_float16,triton_w4a16_g128,triton_w4a16_g128_zp]" \
  results_dir=$OUT/${GPU:-h100} progress=false 2>&1 | tee $OUT/kernels.log | grep -E "record|Error|gate_up .*M= *(1|16|128) " \
  | cut -c1-120
tar -C $OUT -cf $OUT/records.tar ${GPU:-h100} && rm -rf $OUT/${GPU:-h100}
true
