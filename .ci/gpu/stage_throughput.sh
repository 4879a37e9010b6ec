#!/usr/bin/env bash
# Device machine, one call (carry .whl; no model assets needed: the Llama shapes are architecture presets with
# random weights): end-to-end throughput (conf/bench/throughput_gpu.yaml), one Hydra multirun (one process) per
# model. Records go straight into $OUT/h100; a compact speedup table ends the log.
#   stage_throughput.sh                       Llama-2-7B and Llama-3-8B, none/fp8/gptq/awq, CUDA-graph decode
#   stage_throughput.sh MODE METHODS [LIMIT [OVERRIDE...]]
#       Llama-2-7B only (or $MODEL, e.g. MODEL=llama3_8b), bench.throughput.decode_mode=MODE (compile: the torch.compile'd step replayed from a CUDA
#       graph), METHODS comma-separated (e.g. none,gptq), the sweep capped at LIMIT s (500), further Hydra
#       overrides appended (e.g. model.fuse_projections=true 'bench.throughput.batch_sizes=[1,8]'). Each
#       (method, batch size) compiles its own decode step: a 32-layer Llama step took 87-130 s to compile on the
#       2-core CPU machine (CPU inductor; not yet timed on the GPU host), so split the sweep over calls.
# GPTQ/AWQ are speed-only: round-to-nearest into their layouts, no calibration.
source .ci/gpu/env.sh || exit 1
mkdir -p $OUT/h100
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, triton, transformers; print(torch.__version__, triton.__version__, transformers.__version__)"
models="llama2_7b:300 llama3_8b:300"; methods=none,fp8,gptq,awq; extra=""
if [ -n "$1" ]; then
  models="${MODEL:-llama2_7b}:${3:-500}"; methods=$2; extra="bench.throughput.decode_mode=$1 ${*:4}"
fi
for model in $models; do
  start=$SECONDS
  timeout ${model#*:} python3 -m harness -m model=${model%:*} method=$methods bench=throughput_gpu $extra \
    results_dir=$OUT/h100 progress=false 2>&1 | grep -E "quantbench\]|Error|error|Warning: .*(recompile|graph)" \
    | cut -c1-400
  echo "[stage_throughput] ${model%:*}: $((SECONDS - start)) s"
done
python3 -m harness.speedup $OUT/h100 --out $OUT/speedup.md > /dev/null
python3 -m harness.speedup $OUT/h100 --compact
python3 - <<'EOF'
import glob, json, os
for f in sorted(glob.glob(os.environ["OUT"] + "/h100/*.json")):
    r = json.load(open(f))
    t = (r.get("metrics") or {}).get("throughput") or {}
    for p in t.get("points", []):
        print(r["config"]["method"]["quant_method"], p["batch_size"], p["decode_mode"], p.get("compile"),
              {k: round(v, 4) if isinstance(v, float) else v for k, v in p["decode_check"].items()})
    if r.get("status") != "ok":
        print(r["config"]["method"]["quant_method"], r.get("status"), (r.get("error") or "")[:300])
EOF
