#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), fourteenth session: Nsight Compute on the Gluon W4A16 decode tiles
# (16 tokens, 1 and 2 warpgroups) beside the tuned frag kernel, 8192 x 57344 at M = 1 -> $OUT/ncu_gd.txt; stalls per
# SASS line of the two-warpgroup decode kernel -> $OUT/gd_sass.csv
source .ci/gpu/env.sh || exit 1
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
SECTIONS="--section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats
  --section Occupancy --section LaunchStats"
timeout 120 $NCU --clock-control none --profile-from-start off -k regex:"w4a16|frag" $SECTIONS \
  python3 .ci/gpu/ncu_decode_target.py 8192 57344 1 auto gd1 gd2 > $OUT/ncu_gd.txt 2>&1
grep -E "^  [a-zA-Z_]|Duration|DRAM Throughput|No Eligible|Active Warps Per S|Eligible Warps|Registers Per|Achieved Occupancy|Theoretical Occ|Block Limit (Reg|Sha)|Grid Size|Block Size|Issue Slots Busy|Warp Cycles Per Issued" $OUT/ncu_gd.txt | cut -c1-140
timeout 120 $NCU --clock-control none --profile-from-start off -k regex:w4a16_ws --section SourceCounters \
  --section WarpStateStats -o $OUT/gd python3 .ci/gpu/ncu_decode_target.py 8192 57344 1 gd2 > $OUT/ncu_source.log 2>&1
$NCU -i $OUT/gd.ncu-rep --page source --csv --print-source sass > $OUT/gd_sass.csv 2>&1; rm -f $OUT/gd.ncu-rep
python3 .ci/gpu/ncu_stalls.py $OUT/gd_sass.csv --top 30 2>&1 | head -60
true
