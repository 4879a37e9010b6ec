#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), fourteenth session (an H200), ~4 minutes: the gate_up and down rows
# stage_verify14.sh's time limits cut, W4A16 beside cuBLAS fp16 and tinygemm at M = 1-16 -> $OUT/records.tar
source .ci/gpu/env.sh || exit 1
for run in ${RUNS:-llama-3-70b:95 llama-3-8b:60 llama-2-7b:55}; do
  IFS=: read -r model seconds <<< "$run"
  timeout "$seconds" python3 -m harness bench=kernels gpu=h200 "bench.kernels.models=[$model]" \
    "bench.kernels.layers=[gate_up,down]" "bench.kernels.m_values=[${BENCH_M:-1,2,4,8,16}]" \
    "bench.kernels.backends=[cublas_float16,triton_w4a16_g128,torch_tinygemm_int4_g128]" \
    results_dir=$OUT/h200 progress=false 2>&1 | tee $OUT/kernels_$model.log | grep -E "record|Error" | cut -c1-140
done
tar -C $OUT -cf $OUT/records.tar h200 && rm -rf $OUT/h200
true
