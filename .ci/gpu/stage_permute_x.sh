#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), about 6 minutes (eighth session, call 4): frag back on its
# [16, BLOCK_N] word tiles, with x permuted in the kernel (permute_x) as a tuning option.
#   1  the frag GPU tests ($OUT/tests.log)                                                              ~30 s
#   2  graph-timed probes: x copied vs permuted in the kernel (70B gate_up / down, 4096 x 4096)          ~40 s
#   3  the tuner's frag candidates at M = 1-16 on the 11 shapes -> $OUT/w4a16.json                    <= 200 s
#   4  the kernel benchmark at M = 1-16 with that table: cuBLAS bf16/fp16 and our W4A16 (symmetric and zero
#      codes), all 12 layers -> $OUT/records.tar                                                        <= 150 s
source .ci/gpu/env.sh || exit 1
timeout 120 python3 -m pytest -q tests/test_kernels_w4a16.py -k "frag or fragment" > $OUT/tests.log 2>&1
grep -E "passed|failed|^E |^FAILED" $OUT/tests.log | tail -8
timeout 60 python3 .ci/gpu/frag_probe.py --time 8192x57344 1:16:256:4:3:1 1:16:256:4:3:1:1 16:16:256:4:3:1 \
  16:16:256:4:3:1:1 16:16:256:4:4:1:1
timeout 40 python3 .ci/gpu/frag_probe.py --time 28672x8192 16:16:256:4:3:8 16:16:256:4:3:8:1
timeout 40 python3 .ci/gpu/frag_probe.py --time 4096x4096 16:16:256:4:3:16 16:16:256:4:3:16:1 16:16:128:4:3:8:1
TUNE_M="1 2 4 8 16" M_VALUES=1,2,4,8,16 bash .ci/gpu/w4_bench.sh
