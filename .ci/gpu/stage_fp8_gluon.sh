#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), eleventh session: the Gluon block-FP8 GEMM (kernels/fp8_gluon.py)
#   1  `python -m kernels.fp8_tune --compare-gluon`: per Llama shape and M the Gluon GEMM against the Triton one
#      with the committed tiles; the faster becomes the entry's `kernel` -> $OUT/fp8.json (commit it as
#      kernels/tuned/fp8.json), $OUT/tune.log
#   2  with that table: the GPU tests of both block GEMMs (tests/test_kernels_fp8_gluon.py, test_kernels_fp8.py)
#      -> $OUT/tests.log
#   3  the kernel benchmark's block-FP8 rows (Triton, Gluon, auto = the table's pick) beside cuBLAS bf16 and
#      _scaled_mm per tensor on every Llama shape and M, clock and power with each point
#      -> $OUT/records.tar, $OUT/fp8_kernels.log
source .ci/gpu/env.sh || exit 1
SHAPES="8192x57344 8192x10240 28672x8192 8192x8192 4096x28672 4096x6144 14336x4096 4096x4096 4096x22016 4096x12288 11008x4096"
nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv,noheader
T=$OUT/fp8.json
cp kernels/tuned/fp8.json $T
timeout 200 python3 -m kernels.fp8_tune $T --kinds block --compare-gluon --m 128 256 512 1024 2048 4096 \
  --iters 20 --budget-s 170 --shapes $SHAPES > $OUT/tune.log 2>&1
grep -E "gluon|wrote|budget|Error" $OUT/tune.log | cut -c1-120 | tail -70
export QUANTBENCH_FP8_TUNING=$T
timeout 200 python3 -m pytest -q tests/test_kernels_fp8_gluon.py tests/test_kernels_fp8.py > $OUT/tests.log 2>&1
grep -E "passed|failed|^E  |^FAILED" $OUT/tests.log | cut -c1-200 | tail -12
timeout 180 python3 -m harness bench=kernels gpu=h100 "bench.kernels.backends=[cublas_bfloat16,scaled_mm_tensor,\
triton_fp8_block128,gluon_fp8_block128,auto_fp8_block128]" results_dir=$OUT/h100 progress=false \
  > $OUT/fp8_kernels.log 2>&1
grep -E "record|Error|error" $OUT/fp8_kernels.log | cut -c1-200 | tail -5
tar -C $OUT -cf $OUT/records.tar h100 && rm -rf $OUT/h100
true
