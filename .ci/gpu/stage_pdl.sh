#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), about 7 minutes: programmatic dependent launch
# (bench.throughput.pdl) of the compiled + fused batch-1 decode step, Llama-2-7B shape:
#   1  the W4A16 gemv under PDL against the plain launch, eager and graph-replayed (tests)              ~30 s
#   2  none/fp8/gptq/awq x pdl false/true in one multirun, each step profiled by category            <= 400 s
# Records are packed into $OUT/records.tgz (a call returns at most 8 files).
source .ci/gpu/env.sh || exit 1
python3 -c "import torch; print('inductor enable_pdl:', hasattr(torch._inductor.config.triton, 'enable_pdl'))"
timeout 90 python3 -m pytest -q tests/test_kernels_w4a16.py -k programmatic 2>&1 | grep -E "passed|failed|^E " | tail -4
bash .ci/gpu/stage_throughput.sh compile ${METHODS:-none,fp8,gptq,awq} ${LIMIT:-400} 'bench.throughput.batch_sizes=[1]' \
  model.fuse_projections=true 'bench.throughput.prefill_lens=[]' bench.throughput.pdl=false,true \
  bench.throughput.profile_steps=10
tar -C $OUT -czf $OUT/records.tgz h100 && rm -rf $OUT/h100
