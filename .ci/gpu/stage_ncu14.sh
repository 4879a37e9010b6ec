#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), fourteenth session, first call (an H200, ncu reads the counters):
#   1  Nsight Compute on the decode W4A16 kernel w4a16_matmul picks (the H100 table's frag entry, via SAME_CHIP)
#      and cuBLAS fp16 at M = 1 and 16 (.ci/gpu/ncu_w4_target.py K N M auto fp16) -> $OUT/ncu_K_N_M.txt; stalls per
#      SASS line of the frag kernel at M = 1 on 8192 x 57344 -> $OUT/frag_sass.csv
#   2  the tuner, frag path only, M = 1 and 16 on four shapes -> $OUT/w4a16_decode.json, $OUT/tune.log
source .ci/gpu/env.sh || exit 1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem --format=csv,noheader
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
SECTIONS="--section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats
  --section Occupancy --section LaunchStats --section InstructionStats"
for s in "8192 57344 1" "8192 57344 16" "4096 6144 1"; do
  f=$OUT/ncu_${s// /_}.txt
  timeout 100 $NCU --clock-control none --profile-from-start off $SECTIONS \
    python3 .ci/gpu/ncu_w4_target.py $s auto fp16 > $f 2>&1
  echo "== $s"; grep -E "^auto|^  [a-zA-Z_]|Duration|DRAM Throughput|Memory Throughput|Issue Slots Busy|No Eligible|Active Warps Per|Eligible Warps|Registers Per|Achieved Occupancy|Theoretical Occ|Block Limit" $f | cut -c1-150 | head -40
done
timeout 100 $NCU --clock-control none --profile-from-start off -k regex:frag --section SourceCounters \
  --section WarpStateStats -o $OUT/frag python3 .ci/gpu/ncu_w4_target.py 8192 57344 1 auto \
  > $OUT/ncu_source.log 2>&1
tail -1 $OUT/ncu_source.log
$NCU -i $OUT/frag.ncu-rep --page source --csv --print-source sass > $OUT/frag_sass.csv 2>&1; wc -c $OUT/frag_sass.csv
python3 .ci/gpu/ncu_stalls.py $OUT/frag_sass.csv --top 25 2>&1 | head -60
rm -f $OUT/frag.ncu-rep
timeout 240 python3 -m kernels.w4a16_tune $OUT/w4a16_decode.json --paths frag --m 1 16 \
  --shapes 8192x57344 28672x8192 4096x6144 4096x4096 > $OUT/tune.log 2>&1
grep -E "best|wrote" $OUT/tune.log | cut -c1-250
true
