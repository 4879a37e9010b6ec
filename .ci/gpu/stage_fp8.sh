#!/usr/bin/env bash
# Device machine: FP8 kernel tests on CUDA, baseline + every FP8 scheme on the full corpus, FP8 GEMM timings.
source .ci/gpu/env.sh || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
python3 -c "import torch, triton, transformers; print(torch.__version__, triton.__version__, transformers.__version__)"
python3 -m pytest -q tests/test_kernels_fp8.py 2>&1 | tail -5
for m in "method=none" "method=fp8" "method=fp8 method.weight_granularity=channel method.activation_granularity=token" \
         "method=fp8 method.weight_granularity=block" "method=fp8 method.activation_scheme=static"; do
  python3 -m harness $m model=llama results_dir=results/h100 progress=false 2>&1 | grep -E "quantbench|Error|error" 
done
python3 -m harness.metrics.kernels $OUT/kernels_fp8.json --models llama-3-8b --m 1 16 128 1024 4096 2>&1 | tail -45
tar czf $OUT/results.tgz results/h100 outputs 2>/dev/null; ls -la $OUT
