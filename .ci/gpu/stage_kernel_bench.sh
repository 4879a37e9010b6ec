#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), up to 9 minutes: the W4A16 kernel tests on the GPU (log in
# $OUT/tests.log; TESTS=-k ... narrows them, TESTS=skip skips them), then the kernel benchmark through the CLI
# with the committed tuning tables, one record per run. RUNS lists model:layers:seconds (layers comma-separated, "all" for the four);
# BACKENDS (space-separated) narrows the backends, default all of them.
#   call 2 (seventh session): default RUNS, every backend (each model stopped at its limit: partial records)
#   call 3: RUNS="llama-3-70b:o,gate_up,down:290 llama-3-8b:gate_up,down:110 llama-2-7b:o,gate_up,down:120"
#           BACKENDS="cublas_bfloat16 cublas_float16 triton_w4a16_g128 triton_w4a16_g128_zp torch_tinygemm_int4_g128
#                     gemlite_a16w4_g128 scaled_mm_tensor triton_fp8_block128"
rm -f /root/qb/w4a16.json /root/qb/fp8.json  # tables a previous call left on a warm machine: use the committed ones
source .ci/gpu/env.sh || exit 1
if [ "${TESTS:-}" != skip ]; then
  timeout 170 python3 -m pytest -q tests/test_kernels_w4a16.py ${TESTS} > $OUT/tests.log 2>&1
  grep -E "passed|failed|^E |^FAILED" $OUT/tests.log | tail -8
fi
for run in ${RUNS:-llama-3-70b:all:170 llama-3-8b:all:170 llama-2-7b:all:170}; do
  IFS=: read -r model layers seconds <<< "$run"
  extra=()
  [ "$layers" != all ] && extra+=("bench.kernels.layers=[$layers]")
  [ -n "$BACKENDS" ] && extra+=("bench.kernels.backends=[${BACKENDS// /,}]")
  timeout "$seconds" python3 -m harness bench=kernels gpu=h100 "bench.kernels.models=[$model]" "${extra[@]}" \
    results_dir=$OUT/h100 progress=false 2>&1 | tee $OUT/kernels_$model.log \
    | grep -E "roofline|record|Error|gate_up .*(w4a16_g128 |cublas_float16).*M= *(1|16|128|1024) " | cut -c1-140
done
true
