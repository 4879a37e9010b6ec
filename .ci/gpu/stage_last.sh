#!/usr/bin/env bash
# Device machine (carry .whl): (1) bf16 and FP8 with the prefill replayed from a CUDA graph, its check now against
# the model's own noise (git after 963b598: a fixed 5% refused FP8, whose per-tensor scales make its logits depend
# on the batch), batch-1 decode; (2) compiled decode with fused q/k/v and gate/up (fewer, larger W4A16 GEMVs) for
# bf16 and GPTQ at batch 1 and 8. Records in $OUT/h100 (at most 6 files come back with the logs).
source .ci/gpu/env.sh || exit 1
bash .ci/gpu/stage_throughput.sh cuda_graph none,fp8 120 'bench.throughput.batch_sizes=[1]'
mkdir -p $OUT/a && mv $OUT/h100/*.json $OUT/a/ && mv $OUT/speedup.md $OUT/a/
bash .ci/gpu/stage_throughput.sh compile none,gptq 330 'bench.throughput.batch_sizes=[1,8]' model.fuse_projections=true
