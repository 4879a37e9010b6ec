#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), fourteenth session (an H200), ~8 minutes, the committed tables (the
# H200 decode entries of stage_tune14.sh):
#   1  the Gluon tests and every tuned W4A16 entry this GPU takes (its own and the H100's) -> $OUT/tests.log
#   2  the kernel benchmark's W4A16 rows beside cuBLAS and the int4 peers (tinygemm, gemlite) at M = 1-16 (BENCH_M)
#      -> $OUT/records.tar (one record per model)
source .ci/gpu/env.sh || exit 1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
timeout ${TEST_TIMEOUT:-200} python3 -m pytest -q tests/test_kernels_w4a16_gluon.py tests/test_kernels_w4a16.py \
  -k "gluon or every_tuned" > $OUT/tests.log 2>&1
grep -E "passed|failed|^E  |^FAILED" $OUT/tests.log | cut -c1-200 | tail -8
for run in ${RUNS:-llama-3-70b:130 llama-3-8b:100 llama-2-7b:100}; do
  IFS=: read -r model seconds <<< "$run"
  timeout "$seconds" python3 -m harness bench=kernels gpu=h200 "bench.kernels.models=[$model]" \
    "bench.kernels.m_values=[${BENCH_M:-1,2,4,8,16}]" \
    "bench.kernels.backends=[cublas_bfloat16,cublas_float16,triton_w4a16_g128,triton_w4a16_g128_zp,torch_tinygemm_int4_g128,gemlite_a16w4_g128]" \
    results_dir=$OUT/h200 progress=false 2>&1 | tee $OUT/kernels_$model.log | grep -E "roofline|record|Error" | cut -c1-140
done
tar -C $OUT -cf $OUT/records.tar h200 && rm -rf $OUT/h200
true
