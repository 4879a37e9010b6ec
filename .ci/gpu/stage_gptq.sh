#!/usr/bin/env bash
# Device machine: GPTQ calibration variants (paper's 128 x 2048 C4 windows, act-order, asym, damping) beside
# RTN/AWQ, perplexity only, records written straight into $OUT/h100 so a time-out loses nothing; then timings.
source .ci/gpu/env.sh || exit 1
mkdir -p $OUT/h100 && cp results/h100/20261125T00*.json $OUT/h100/ 2>/dev/null; ls $OUT/h100
run() { timeout 200 python3 -m harness "$@" model=llama results_dir=$OUT/h100 progress=false 2>&1 | grep -E "quantbench\]|Error" | tail -2; }
run method=gptq method.calibration_seq_len=2048 bench=perplexity
run method=gptq method.calibration_seq_len=2048 method.sym=false method.desc_act=true bench=perplexity
run method=gptq method.calibration_seq_len=2048 method.desc_act=true bench=perplexity
run method=gptq method.calibration_seq_len=2048 method.sym=false bench=perplexity
run method=awq method.group_size=64 bench=perplexity
run method=fp8 method.weight_granularity=channel method.activation_granularity=token
timeout 150 python3 -m harness.metrics.kernels $OUT/h100 --models llama-3-8b llama-3-70b 2>&1 | grep -E "record|roofline|M=    1|M=   16|M= 4096" | tail -40
