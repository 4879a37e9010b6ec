#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), about 6 minutes: programmatic dependent launch
# (bench.throughput.pdl) of the compiled + fused batch-1 decode step, Llama-2-7B shape:
#   1  the W4A16 gemv under PDL against the plain launch, eager and graph-replayed (tests)              ~30 s
#   2  METHODS (default none,gptq) x pdl false/true, each job in its own process (isolate, about 65 s a
#      job), each step profiled by category                                                             <= 300 s
# First run (call 22, git b1b08f7) prefetched each program's whole weight slice and ran in one process; since
# the gemv prefetches 2 K-blocks (GEMV_PDL_PREFETCH_BLOCKS).
# Records are packed into $OUT/records.tgz (a call returns at most 8 files).
source .ci/gpu/env.sh || exit 1
python3 -c "import torch; print('inductor enable_pdl:', hasattr(torch._inductor.config.triton, 'enable_pdl'))"
timeout 90 python3 -m pytest -q tests/test_kernels_w4a16.py -k programmatic 2>&1 | grep -E "passed|failed|^E " | tail -4
bash .ci/gpu/stage_throughput.sh compile ${METHODS:-none,gptq} ${LIMIT:-300} 'bench.throughput.batch_sizes=[1]' \
  model.fuse_projections=true 'bench.throughput.prefill_lens=[]' bench.throughput.pdl=false,true \
  bench.throughput.profile_steps=10
tar -C $OUT -czf $OUT/records.tgz h100 && rm -rf $OUT/h100
