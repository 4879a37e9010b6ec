#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), about 8 minutes: the W4A16 kernel tests on the GPU (log in
# $OUT/tests.log), then the kernel benchmark through the CLI, one record per model shape set, every backend,
# M = 1..4096, with the committed tuning tables.
rm -f /root/qb/w4a16.json /root/qb/fp8.json  # tables a previous call left on a warm machine: use the committed ones
source .ci/gpu/env.sh || exit 1
timeout 170 python3 -m pytest -q tests/test_kernels_w4a16.py > $OUT/tests.log 2>&1
grep -E "passed|failed|^E |^FAILED" $OUT/tests.log | tail -8
for model in ${MODELS:-llama-3-70b llama-3-8b llama-2-7b}; do
  timeout ${PER_MODEL_S:-170} python3 -m harness bench=kernels gpu=h100 "bench.kernels.models=[$model]" \
    results_dir=$OUT/h100 progress=false 2>&1 | tee $OUT/kernels_$model.log \
    | grep -E "roofline|record|Error|gate_up .*(w4a16_g128 |cublas_float16).*M= *(1|16|128|1024) " | cut -c1-140
done
true
