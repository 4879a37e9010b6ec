#!/usr/bin/env bash
# Device machine: kernel tests on CUDA, GPTQ/RTN/AWQ on the full corpus, GEMM timings of every backend.
source .ci/gpu/env.sh || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
python3 -m pytest -q -s tests/test_kernels_fp8.py tests/test_kernels_w4a16.py 2>&1 | grep -E "rel err|passed|failed|Error" | tail -12
for m in "method=none" "method=rtn" "method=gptq" "method=awq" "method=gptq method.desc_act=true" \
         "method=rtn method.sym=false" "method=gptq method.sym=false" \
         "method=fp8 method.weight_granularity=channel method.activation_granularity=token"; do
  timeout 300 python3 -m harness $m model=llama results_dir=results/h100 progress=false 2>&1 | grep -E "quantbench|Error|error" | tail -3
done
timeout 240 python3 -m harness.metrics.kernels results/h100 --models llama-3-8b llama-3-70b 2>&1 | grep -E "record|roofline|M=    1|M=   16|M= 4096" | tail -60
tar czf $OUT/results.tgz results/h100 outputs 2>/dev/null; ls -la $OUT
