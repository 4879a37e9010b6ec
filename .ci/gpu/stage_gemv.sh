#!/usr/bin/env bash
# Device machine (carry .whl, which holds the gemlite wheel); records and tables go straight into $OUT.
#   A  the W4A16 kernel tests on the GPU, a re-tune of M <= 16 (the gemv path for M <= 2; skinny with its
#      in-kernel split-K reduction) into $OUT/w4a16.json, the kernel benchmark at M <= 16 with that table
#   B  the kernel tests, the M <= 2 re-tune of the shapes A did not reach, then the full kernel benchmark (every
#      backend, gemlite included, every M), one record per model so that a time-out keeps what finished
#   C  the kernel tests, the M <= 2 gemv-only re-tune of the shapes A did not reach, then the kernel benchmark at
#      M = 1 and 16 (every backend), one record per model (the full M range does not fit one call: tinygemm alone
#      takes 5-25 ms a call at M >= 1024, and every (backend, M) compiles and captures its own graph)
#   D  the kernel tests, then a re-tune of M = 1-4 on every shape (gemv up to M = 4 and skinny), -> $OUT/w4a16.json
#   E  the kernel benchmark at M = 1, 2, 4, 8, 16 with the committed table, one record per model (written after
#      every layer, so a time-out keeps the finished ones)
source .ci/gpu/env.sh || exit 1
SHAPES="8192x57344 8192x10240 28672x8192 8192x8192 4096x28672 4096x6144 14336x4096 4096x4096 4096x22016 4096x12288 11008x4096"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv,noheader
python3 -c "import torch, triton, gemlite; print(torch.__version__, triton.__version__, gemlite.__version__)" 2>&1 | tail -1
timeout 60 python3 -m pytest -q -x tests/test_kernels_w4a16.py 2>&1 | grep -E "passed|failed|Error|assert" | tail -4
case "$1" in
A) timeout 300 python3 -m kernels.w4a16_tune $OUT/w4a16.json --merge kernels/tuned/w4a16.json --m 1 2 4 8 16 \
     --shapes $SHAPES 2>&1 | tee $OUT/tune.log | grep -E "best|wrote|Error" | cut -c1-175
   export QUANTBENCH_W4A16_TUNING=$OUT/w4a16.json
   timeout 170 python3 -m harness.metrics.kernels $OUT --models llama-2-7b llama-3-8b llama-3-70b --m 1 2 4 8 16 \
     2>&1 | tee $OUT/bench.log | grep -E "record|roofline|gate_up .*M=    1 |gate_up .*M=   16 " | cut -c1-120 | tail -45 ;;
B) timeout 100 python3 -m kernels.w4a16_tune $OUT/w4a16.json --merge kernels/tuned/w4a16.json --m 1 2 \
     --shapes 4096x28672 4096x6144 14336x4096 4096x4096 4096x22016 4096x12288 11008x4096 2>&1 | tee $OUT/tune.log \
     | grep -E "best|wrote|Error" | cut -c1-175
   export QUANTBENCH_W4A16_TUNING=$OUT/w4a16.json
   for model in llama-3-70b:170 llama-3-8b:125 llama-2-7b:125; do
     timeout ${model#*:} python3 -m harness.metrics.kernels $OUT --models ${model%:*} 2>&1 | tee -a $OUT/bench.log \
       | grep -E "record|gate_up .*M=    1 " | cut -c1-120
   done ;;
C) timeout 80 python3 -m kernels.w4a16_tune $OUT/w4a16.json --merge kernels/tuned/w4a16.json --m 1 2 --paths gemv \
     --iters 10 --shapes 4096x28672 4096x6144 14336x4096 4096x4096 4096x22016 4096x12288 11008x4096 2>&1 \
     | tee $OUT/tune.log | grep -E "best|wrote|Error" | cut -c1-150
   export QUANTBENCH_W4A16_TUNING=$OUT/w4a16.json
   for model in llama-3-70b:110 llama-3-8b:90 llama-2-7b:80; do
     timeout ${model#*:} python3 -m harness.metrics.kernels $OUT --models ${model%:*} --m 1 16 2>&1 \
       | tee -a $OUT/bench.log | grep -E "record|gate_up .*M=    1 " | cut -c1-100
   done ;;
D) timeout 480 python3 -m kernels.w4a16_tune $OUT/w4a16.json --merge kernels/tuned/w4a16.json --m 1 2 3 4 \
     --paths gemv skinny --iters 10 --shapes $SHAPES 2>&1 | tee $OUT/tune.log | grep -E "best|wrote|Error" | cut -c1-150 ;;
E) for model in llama-3-70b:170 llama-3-8b:150 llama-2-7b:150; do
     timeout ${model#*:} python3 -m harness.metrics.kernels $OUT --models ${model%:*} --m 1 2 4 8 16 2>&1 \
       | tee -a $OUT/bench.log | grep -E "record|gate_up .*M=    1 " | cut -c1-100
   done ;;
esac
