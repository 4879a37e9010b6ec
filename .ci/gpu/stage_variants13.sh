#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), thirteenth session: versions of the Gluon W4A16 kernel timed in one
# run (.ci/gpu/gluon_w4_ws_probe.py, $VARIANTS: module files carried in .whl/variants/, kernels/w4a16_gluon.py as
# the unnamed one), then Nsight Compute's stalls per SASS line of the working tree's two-consumer kernel.
#   VARIANT_FILES="name=.whl/variants/x.py ...", PROBE_SHAPES, PROBE_M, CONSUMERS ("1 2"); NO_NCU=1: the timings only;
#   NCU_TILE (2c): the tile ncu profiles (.ci/gpu/ncu_w4_target.py), GLUON_MODULE: the module it runs
source .ci/gpu/env.sh || exit 1
SHAPES="${PROBE_SHAPES:-8192x57344 28672x8192 8192x8192 4096x28672 4096x4096}" VARIANTS="$VARIANT_FILES" \
  timeout ${PROBE_TIMEOUT:-300} python3 .ci/gpu/gluon_w4_ws_probe.py run ${PROBE_M:-256 1024} 2>&1 | grep -v Warn \
  | tee $OUT/variants.log | sed 's/PASS rel err [0-9.e-]*; //' | cut -c1-400
[ -n "${NO_NCU:-}" ] && exit 0
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
timeout 120 $NCU --clock-control none --profile-from-start off -k regex:w4a16_ws2 --section SourceCounters \
  --section WarpStateStats --section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis_Tables \
  -o $OUT/ws2 python3 .ci/gpu/ncu_w4_target.py 8192 57344 1024 ${NCU_TILE:-2c} > $OUT/ncu_source.log 2>&1
tail -1 $OUT/ncu_source.log
$NCU -i $OUT/ws2.ncu-rep --page source --csv --print-source sass > $OUT/ws2_sass.csv 2>&1
$NCU -i $OUT/ws2.ncu-rep > $OUT/ws2_details.txt 2>&1
grep -E "Duration|Compute \(SM\) Throughput|L2 Cache Throughput|highest-utilized|bank" $OUT/ws2_details.txt | cut -c1-160
true
