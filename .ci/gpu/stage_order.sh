#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), about 5 minutes: does a 4-bit decode measurement depend on what
# ran before it in the same process? Compiled + fused batch-1 decode, Llama-2-7B shape, one Hydra multirun
# (one process) per line: gptq alone; none then gptq (as 2026-11-27 call 1); fp8 then gptq (as call 3).
# Records are packed into $OUT/records.tgz (a call returns at most 8 files). Call 23 (git 5913e2a) passed the
# comma-separated list into results_dir too, which Hydra swept as a second axis: that call's none,gptq line ran
# none, none, gptq, gptq (results/h100/README.md); results_dir now joins the methods with '_'. isolate=false:
# since 25c490f a GPU multirun otherwise runs each job in its own process, which is what this script questions.
source .ci/gpu/env.sh || exit 1
for methods in gptq none,gptq fp8,gptq; do
  echo "== process: method=$methods"
  timeout 150 python3 -m harness -m model=llama2_7b method=$methods bench=throughput_gpu \
    bench.throughput.decode_mode=compile model.fuse_projections=true 'bench.throughput.batch_sizes=[1]' \
    'bench.throughput.prefill_lens=[]' results_dir=$OUT/h100/${methods//,/_} progress=false isolate=false 2>&1 \
    | grep -E "quantbench\] method|Error" | cut -c1-200
done
tar -C $OUT -czf $OUT/records.tgz h100 && rm -rf $OUT/h100
