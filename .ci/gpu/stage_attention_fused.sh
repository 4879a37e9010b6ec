#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), about 8 minutes: the split-KV decode attention with its combine
# folded into the split kernel (one launch; built after the fourth 2026-11-27 session's device time ran out):
#   1  its tests and the PDL gemv tests on the GPU                                                      ~40 s
#   2  the kernel against SDPA (cuDNN) at decode (.ci/gpu/attention_bench.py)                            ~40 s
#   3  compiled + fused batch-1 decode, each job in its own process: none/gptq/awq with SDPA, then
#      none/gptq with split_kv, profiled by category                                                  <= 420 s
# Records are packed into $OUT/records.tgz (a call returns at most 8 files).
source .ci/gpu/env.sh || exit 1
timeout 90 python3 -m pytest -q tests/test_decode_attention.py tests/test_kernels_w4a16.py -k "attention or split or programmatic" 2>&1 \
  | grep -E "passed|failed|^E " | tail -6
timeout 90 python3 .ci/gpu/attention_bench.py 2>&1 | tee $OUT/attention_bench.log
common="model=llama2_7b bench=throughput_gpu bench.throughput.decode_mode=compile model.fuse_projections=true
  bench.throughput.batch_sizes=[1] bench.throughput.prefill_lens=[] bench.throughput.profile_steps=10
  results_dir=$OUT/h100 progress=false"
run() { timeout $1 python3 -m harness ${@:2} $common 2>&1 | grep -E "quantbench\]|Error" | grep -v "record:" | cut -c1-160; }
run 250 -m method=none,gptq,awq
run 170 -m method=none,gptq model.attn_implementation=split_kv
python3 -m harness.speedup $OUT/h100 --compact
tar -C $OUT -czf $OUT/records.tgz h100 && rm -rf $OUT/h100
