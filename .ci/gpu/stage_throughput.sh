#!/usr/bin/env bash
# Device machine, one call (carry .whl; no model assets needed: the Llama shapes are architecture presets with
# random weights): end-to-end throughput (conf/bench/throughput_gpu.yaml) of Llama-2-7B and Llama-3-8B, baseline
# bf16 + FP8 + GPTQ + AWQ (GPTQ/AWQ speed-only: round-to-nearest into their layouts, no calibration), one Hydra
# multirun (one process) per model. Records go straight into $OUT/h100; a compact speedup table ends the log.
# Budget: under 8 minutes on an H100 (each model's sweep is capped at 235 s).
# `stage_throughput.sh compile` runs Llama-2-7B only, with bench.throughput.decode_mode=compile (torch.compile
# of the decode step, quantized matmuls as one op each, the compiled step replayed from a CUDA graph), all methods.
source .ci/gpu/env.sh || exit 1
mkdir -p $OUT/h100
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, triton, transformers; print(torch.__version__, triton.__version__, transformers.__version__)"
models="llama2_7b llama3_8b"; extra=""
[ "$1" = compile ] && models=llama2_7b && extra="bench.throughput.decode_mode=compile"
for model in $models; do
  start=$SECONDS
  timeout 235 python3 -m harness -m model=$model method=none,fp8,gptq,awq bench=throughput_gpu $extra \
    results_dir=$OUT/h100 progress=false 2>&1 | grep -E "quantbench\]|Error|error" | cut -c1-400
  echo "[stage_throughput] $model: $((SECONDS - start)) s"
done
python3 -m harness.speedup $OUT/h100 --out $OUT/speedup.md > /dev/null
python3 -m harness.speedup $OUT/h100 --compact
