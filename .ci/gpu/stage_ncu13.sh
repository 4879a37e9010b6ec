#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), thirteenth session, first call (an H200 on Firecracker, where ncu
# reads the hardware counters), ~8 minutes:
#   1  the Gluon W4A16 GPU tests (64-token tiles' first run) -> $OUT/tests.log
#   2  Nsight Compute on the Gluon kernel (1 and 2 consumers) and cuBLAS fp16, same shape and M
#      (.ci/gpu/ncu_w4_target.py): speed of light, pipes, memory, warp stalls -> $OUT/ncu_K_N_M.txt; the
#      two-consumer kernel's stalls per SASS line at M = 1024 -> $OUT/ws2_sass.csv
#   3  the timing probe on the 11 Llama shapes at M = 128-1024 (1c, 2c, cuBLAS fp16, same run) -> $OUT/w4_gluon.log
source .ci/gpu/env.sh || exit 1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
echo "ncu: $NCU $($NCU --version | tail -1)"
timeout 150 python3 -m pytest -q tests/test_kernels_w4a16_gluon.py > $OUT/tests.log 2>&1
grep -E "passed|failed|^E  |^FAILED" $OUT/tests.log | cut -c1-200 | tail -8
SECTIONS="--section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis
  --section MemoryWorkloadAnalysis_Tables --section WarpStateStats --section SchedulerStats --section Occupancy
  --section LaunchStats --section InstructionStats"
for s in "8192 57344 1024" "8192 57344 256" "4096 4096 128"; do
  f=$OUT/ncu_${s// /_}.txt
  timeout 120 $NCU --clock-control none --profile-from-start off $SECTIONS python3 .ci/gpu/ncu_w4_target.py $s \
    > $f 2>&1
  echo "== $s: $(grep -cE '^  [a-zA-Z_].*\(' $f) kernels"; grep -E "^  [a-zA-Z_]|Duration|Compute \(SM\) Throughput|L2 Cache Throughput|DRAM Throughput|Issue Slots Busy|highest-utilized" $f | cut -c1-150 | head -40
done
timeout 120 $NCU --clock-control none --profile-from-start off -k regex:w4a16_ws2 --section SourceCounters \
  --section WarpStateStats -o $OUT/ws2 python3 .ci/gpu/ncu_w4_target.py 8192 57344 1024 2c > $OUT/ncu_source.log 2>&1
tail -2 $OUT/ncu_source.log
$NCU -i $OUT/ws2.ncu-rep --page source --csv --print-source sass > $OUT/ws2_sass.csv 2>&1; wc -c $OUT/ws2_sass.csv
SHAPES="8192x57344 28672x8192 8192x10240 8192x8192 4096x28672 14336x4096 4096x6144 4096x4096 4096x22016 11008x4096 4096x12288" \
  timeout 170 python3 .ci/gpu/gluon_w4_ws_probe.py run 128 256 512 1024 2>&1 | grep -v Warn | tee $OUT/w4_gluon.log \
  | cut -c1-60,120-220 | tail -44
true
