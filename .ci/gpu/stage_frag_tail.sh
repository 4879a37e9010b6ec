#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), about 6 minutes (eighth session, call 10): split-K for the frag
# decode tile where the tiles outnumber the SMs but fill 0.85 of the slots (FRAG_TAIL_TILE, Llama-3-70B gate_up).
#   1  graph-timed probes: 70B gate_up at M = 1 and 16, split 1, 2, 4, 8, x copied or permuted        ~40 s
#   2  the tuner's frag candidates at M = 1-16 on the 11 shapes -> $OUT/w4a16.json                    <= 260 s
#   3  the kernel benchmark at M = 1-16 with that table: cuBLAS bf16/fp16, our W4A16 (symmetric and zero
#      codes), all 12 layers -> $OUT/records.tar                                                        <= 150 s
source .ci/gpu/env.sh || exit 1
timeout 80 python3 .ci/gpu/frag_probe.py --time 8192x57344 1:16:256:4:3:1 1:16:256:4:3:2 1:16:256:4:3:4 \
  1:16:256:4:3:8 1:16:256:4:3:8:1 16:16:256:4:3:1 16:16:256:4:3:2 16:16:256:4:3:4 16:16:256:4:3:8 16:16:256:4:3:8:1
TUNE_M="1 2 4 8 16" M_VALUES=1,2,4,8,16 bash .ci/gpu/w4_bench.sh
