#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), tenth session: the block-scaled FP8 GEMM with the chained
# accumulator (CHAIN, `kernels/fp8.py`), ~8 minutes:
#   1  its GPU tests against the float64 reference ($OUT/tests.log)
#   2  the block-scaled tiles re-tuned at M = 4096 and 1024 on every shape, CHAIN tiles beside the others
#      (-> $OUT/fp8.json, merged into the committed table; $OUT/tune.log)
#   3  the kernel benchmark's FP8 and cuBLAS rows at M = 256-4096 with that table -> $OUT/records.tar
#   4  the W4A16 benchmark again at every M (`w4_bench.sh`; its record joins records.tar)
source .ci/gpu/env.sh || exit 1
SHAPES="8192x57344 8192x10240 28672x8192 8192x8192 4096x28672 4096x6144 14336x4096 4096x4096 4096x22016 4096x12288 11008x4096"
timeout 120 python3 -m pytest -q tests/test_kernels_fp8.py -k "block_gemm or chain" > $OUT/tests.log 2>&1
grep -E "passed|failed|^E |^FAILED" $OUT/tests.log | cut -c1-300 | tail -6
T=$OUT/fp8.json
timeout 260 python3 -m kernels.fp8_tune $T --merge kernels/tuned/fp8.json --kinds block --m 4096 1024 \
  --budget-s 230 --shapes $SHAPES 2>&1 | tee $OUT/tune.log | grep -E "best|wrote|budget|Error" | cut -c1-200
export QUANTBENCH_FP8_TUNING=$T
timeout 150 python3 -m harness bench=kernels gpu=h100 "bench.kernels.models=[llama-3-70b,llama-3-8b,llama-2-7b]" \
  "bench.kernels.m_values=[256,512,1024,4096]" \
  "bench.kernels.backends=[cublas_bfloat16,cublas_float16,scaled_mm_tensor,scaled_mm_rowwise,triton_fp8_block128]" \
  results_dir=$OUT/h100 progress=false 2>&1 | tee $OUT/fp8_kernels.log | grep -E "record|Error|gate_up .*M= *(1024|4096) " \
  | cut -c1-120
mkdir -p $OUT/keep && mv $OUT/h100 $OUT/keep/fp8
M_VALUES=1,2,4,8,16,32,64,128,256,512,1024,4096 BENCH_TIMEOUT=150 bash .ci/gpu/w4_bench.sh > /dev/null
tar -C $OUT -xf $OUT/records.tar && rm $OUT/records.tar && mv $OUT/keep/fp8/* $OUT/h100/ 2>/dev/null
tar -C $OUT -cf $OUT/records.tar h100 && rm -rf $OUT/h100 $OUT/keep
ls $OUT
true
