#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), about 5 minutes: silu(gate) * up in the W4A16 gemv's epilogue
# (a fused gate_up layer with interleaved columns, methods/fusion.py FusedGLUMLP):
#   1  the GLU kernel tests on the GPU                                                                  ~15 s
#   2  compiled + fused batch-1 decode, split-KV attention, PDL: none/gptq/awq, one process each     <= 240 s
# Records are packed into $OUT/records.tgz (a call returns at most 8 files).
source .ci/gpu/env.sh || exit 1
timeout 60 python3 -m pytest -q tests/test_kernels_w4a16.py -k "glu" 2>&1 | grep -E "passed|failed|^E |^FAILED" | tail -4
bash .ci/gpu/stage_throughput.sh compile ${METHODS:-none,gptq,awq} ${LIMIT:-240} 'bench.throughput.batch_sizes=[1]' \
  model.fuse_projections=true 'bench.throughput.prefill_lens=[]' model.attn_implementation=split_kv \
  bench.throughput.pdl=true bench.throughput.profile_steps=10
tar -C $OUT -czf $OUT/records.tgz h100 && rm -rf $OUT/h100
