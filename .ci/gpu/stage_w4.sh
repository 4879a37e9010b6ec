#!/usr/bin/env bash
# Device machine, three back-to-back calls (the machine is released 30 s after a call; records go straight into
# $OUT/h100 so a time-out loses nothing):
#   A  carry .whl + .assets/a   kernel tests on CUDA
#   B  carry .whl + .assets/b   baseline, RTN, GPTQ, AWQ on the full corpus (perplexity + throughput)
#   C  carry .whl (+ .assets/b when B did not run)   GPTQ/AWQ/RTN option variants, perplexity only
source .ci/gpu/env.sh || exit 1
mkdir -p $OUT/h100
run() { timeout 200 python3 -m harness "$@" model=llama results_dir=$OUT/h100 progress=false 2>&1 | grep -E "quantbench\]|Error" | tail -2; }
case "$1" in
A) nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
   python3 -c "import torch, triton, transformers; print(torch.__version__, triton.__version__, transformers.__version__)"
   python3 -m pytest -q tests/test_kernels_fp8.py tests/test_kernels_w4a16.py tests/test_awq_format.py 2>&1 | tail -3 ;;
B) for m in "method=none" "method=rtn" "method=gptq" "method=awq" "method=rtn method.sym=false" \
            "method=gptq method.desc_act=true" "method=gptq method.sym=false"; do run $m; done ;;
C) P=bench=perplexity
   run method=gptq method.sym=false method.desc_act=true $P
   run method=gptq method.sym=false method.damp_percent=0.1 $P
   run method=gptq method.sym=false method.true_sequential=false $P
   run method=gptq method.sym=false method.calibration_seq_len=2048 $P
   run method=gptq method.sym=false $P
   run method=awq method.group_size=64 $P
   run method=rtn method.group_size=64 method.sym=false $P
   run method=gptq method.bits=8 $P
   run method=rtn method.bits=8 $P ;;
esac
