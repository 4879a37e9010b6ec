#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), eleventh session, last call (~3 minutes):
#   1  the FP8 GPU tests (Triton and Gluon block GEMMs, the committed table's choices) and the kernel-bench tests
#      -> $OUT/tests.log
#   2  the Gluon kernel's binary as built here (kernels.sass fp8-gluon: A-register hazards, spills, registers)
#   3  block FP8 as method=fp8 runs it (auto) beside bf16 and _scaled_mm on Llama-3-70B at M = 1024 and 4096, with
#      the SM clock and the instantaneous board power of each point -> $OUT/records.tar, $OUT/fp8_kernels.log
source .ci/gpu/env.sh || exit 1
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv,noheader
timeout 200 python3 -m pytest -q tests/test_kernels_fp8_gluon.py tests/test_kernels_fp8.py tests/test_kernel_bench.py \
  > $OUT/tests.log 2>&1
grep -E "passed|failed|^E  |^FAILED" $OUT/tests.log | cut -c1-200 | tail -12
timeout 120 python3 -m kernels.sass fp8-gluon 2>/dev/null | tail -1 | tee $OUT/sass.log
timeout 150 python3 -m harness bench=kernels gpu=h100 "bench.kernels.models=[llama-3-70b]" \
  "bench.kernels.m_values=[1024,4096]" "bench.kernels.backends=[cublas_bfloat16,scaled_mm_tensor,auto_fp8_block128]" \
  results_dir=$OUT/h100 progress=false > $OUT/fp8_kernels.log 2>&1
grep -E "record|Error|error" $OUT/fp8_kernels.log | cut -c1-200 | tail -5
python3 - <<'PY'
import glob, json
for f in glob.glob("/root/out/h100/*.json") + glob.glob(__import__("os").environ["OUT"] + "/h100/*.json"):
    for row in json.load(open(f))["metrics"]["rows"]:
        print(row["layer"], row["M"], row["backend"], round(row["median_ms"], 4), row.get("gpu_state"))
PY
tar -C $OUT -cf $OUT/records.tar h100 && rm -rf $OUT/h100
true
