#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), about 8 minutes (eighth session, call 2): why frag decode stops at
# 74-77% of HBM, and deeper frag pipelines for M <= 16.
#   1  Nsight Compute on frag at Llama-3-70B gate_up M = 16 (the committed 16 x 256 / 3 stages, 4 and 5 stages, 8
#      warps), down M = 16 (split 8), gate_up M = 256 (128 x 128) -> $OUT/ncu.txt                        ~90 s
#   2  the tuner's frag candidates (now also at M = 1, with FRAG_DECODE_TILES) at M = 1, 4, 8, 16 on the 11 shapes,
#      against each committed entry -> $OUT/w4a16.json (merged into the committed table)                ~330 s
source .ci/gpu/env.sh || exit 1
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
echo "ncu: $NCU"
timeout 150 $NCU --clock-control none -k regex:_w4a16_frag_kernel \
  --section SpeedOfLight --section MemoryWorkloadAnalysis --section MemoryWorkloadAnalysis_Tables \
  --section WarpStateStats --section Occupancy --section LaunchStats --section SchedulerStats \
  python3 .ci/gpu/frag_probe.py 8192x57344 16:16:256:4:3:1 16:16:256:4:4:1 16:16:256:4:5:1 16:16:256:8:4:1 \
  256:128:128:4:3:1 > $OUT/ncu.txt 2>&1
timeout 60 $NCU --clock-control none -k regex:_w4a16_frag_kernel \
  --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section Occupancy \
  python3 .ci/gpu/frag_probe.py 28672x8192 16:16:256:4:3:8 16:16:256:4:4:8 >> $OUT/ncu.txt 2>&1
grep -E "rel err|Memory Throughput|DRAM Throughput|Duration|Achieved Occupancy|Registers Per|Bank|No Eligible|==PROF==|==ERROR==" $OUT/ncu.txt | head -60
SHAPES="8192x57344 28672x8192 8192x10240 8192x8192 4096x28672 14336x4096 4096x6144 4096x4096 4096x22016 11008x4096 4096x12288"
timeout 340 python3 -m kernels.w4a16_tune $OUT/w4a16.json --merge kernels/tuned/w4a16.json --paths frag --m 1 4 8 16 \
  --shapes $SHAPES 2>&1 | tee $OUT/tune_decode.log | grep -E "best|wrote|Error" | cut -c1-190
true
