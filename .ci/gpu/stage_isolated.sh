#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), about 8 minutes: compiled + fused batch-1 decode of the Llama-2-7B
# shape, every job in its own process (isolate, the default on a GPU: a fourth run in one process came out up to
# 6% slower), profiled by category:
#   1  none, gptq, awq (SDPA)
#   2  none, gptq with programmatic dependent launch (bench.throughput.pdl=true)
#   3  gptq with the split-KV decode attention (model.attn_implementation=split_kv)
# Records are packed into $OUT/records.tgz (a call returns at most 8 files).
source .ci/gpu/env.sh || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
common="model=llama2_7b bench=throughput_gpu bench.throughput.decode_mode=compile model.fuse_projections=true
  bench.throughput.batch_sizes=[1] bench.throughput.prefill_lens=[] bench.throughput.profile_steps=10
  results_dir=$OUT/h100 progress=false"
run() { timeout $1 python3 -m harness ${@:2} $common 2>&1 | grep -E "quantbench\]|Error" | grep -v "record:" | cut -c1-200; }
start=$SECONDS
run 200 -m method=none,gptq,awq
run 150 -m method=none,gptq bench.throughput.pdl=true
run 80 method=gptq model.attn_implementation=split_kv
echo "[stage_isolated] $((SECONDS - start)) s"
python3 -m harness.speedup $OUT/h100 --compact
tar -C $OUT -czf $OUT/records.tgz h100 && rm -rf $OUT/h100
