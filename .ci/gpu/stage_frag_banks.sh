#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), about 9 minutes (eighth session, call 3): frag with its words
# staged conflict-free in shared memory, and x permuted in the kernel (permute_x).
#   1  the frag GPU tests ($OUT/tests.log)                                                              ~40 s
#   2  Nsight Compute at Llama-3-70B gate_up M = 16 (16 x 256, 3 stages; with permute_x) -> $OUT/ncu.txt    ~40 s
#   3  graph-timed probes: x copied vs permuted in the kernel, 70B gate_up / down, 8B o at M = 1, 16       ~40 s
#   4  the tuner's frag candidates at M = 1-16, then 32-256, on the 11 shapes -> $OUT/w4a16.json       <= 400 s
source .ci/gpu/env.sh || exit 1
timeout 120 python3 -m pytest -q tests/test_kernels_w4a16.py -k "frag or fragment" > $OUT/tests.log 2>&1
grep -E "passed|failed|^E |^FAILED" $OUT/tests.log | tail -8
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
timeout 100 $NCU --clock-control none -k regex:_w4a16_frag_kernel \
  --section SpeedOfLight --section MemoryWorkloadAnalysis --section MemoryWorkloadAnalysis_Tables \
  --section WarpStateStats --section Occupancy --section SchedulerStats \
  python3 .ci/gpu/frag_probe.py 8192x57344 16:16:256:4:3:1 16:16:256:4:3:1:1 > $OUT/ncu.txt 2>&1
grep -E "rel err|DRAM Throughput|Duration|way bank|No Eligible|==ERROR==" $OUT/ncu.txt | head -20
timeout 60 python3 .ci/gpu/frag_probe.py --time 8192x57344 1:16:256:4:3:1 1:16:256:4:3:1:1 16:16:256:4:3:1 \
  16:16:256:4:3:1:1 16:16:256:4:4:1 16:16:256:4:4:1:1
timeout 40 python3 .ci/gpu/frag_probe.py --time 28672x8192 16:16:256:4:3:8 16:16:256:4:3:8:1
timeout 40 python3 .ci/gpu/frag_probe.py --time 4096x4096 16:16:256:4:3:16 16:16:256:4:3:16:1 16:16:128:4:3:8:1
SHAPES="8192x57344 28672x8192 8192x10240 8192x8192 4096x28672 14336x4096 4096x6144 4096x4096 4096x22016 11008x4096 4096x12288"
timeout 220 python3 -m kernels.w4a16_tune $OUT/w4a16.json --merge kernels/tuned/w4a16.json --paths frag \
  --m 1 2 4 8 16 --shapes $SHAPES 2>&1 | tee $OUT/tune_decode.log | grep -E "best|wrote|Error" | cut -c1-200
[ -f $OUT/w4a16.json ] || cp kernels/tuned/w4a16.json $OUT/w4a16.json
timeout 200 python3 -m kernels.w4a16_tune $OUT/w4a16.json --paths frag --m 32 64 128 256 \
  --shapes $SHAPES 2>&1 | tee $OUT/tune_mid.log | grep -E "best|wrote|Error" | cut -c1-200
true
