#!/usr/bin/env bash
# Device machine, two back-to-back calls (records and tables go straight into $OUT):
#   A  carry .whl + .assets/a   CUDA kernel/quantizer tests, then tune the W4A16 table -> $OUT/w4a16.json
#                               (kept on the machine too); `A skinny` re-tunes only M <= 16 into the committed one
#   B  carry .whl + .assets/b   GPTQ GAR vs RTN on the full corpus, then the kernel benchmark (every backend,
#                               Llama-2-7B/3-8B/3-70B shapes) with the table A left on the machine
#   C  carry .whl               re-tune M <= 256 timing CUDA-graph replays, then the kernel benchmark
source .ci/gpu/env.sh || exit 1
mkdir -p $OUT/h100
SHAPES="8192x57344 8192x10240 28672x8192 8192x8192 4096x28672 4096x6144 14336x4096 4096x4096 4096x22016 4096x12288 11008x4096"
run() { timeout 200 python3 -m harness "$@" model=llama results_dir=$OUT/h100 progress=false 2>&1 | grep -E "quantbench\]|Error" | tail -2; }
case "$1" in
A) nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv
   python3 -c "import torch, triton, transformers; print(torch.__version__, triton.__version__, transformers.__version__)"
   timeout 150 python3 -m pytest -q -x tests/test_kernels_w4a16.py tests/test_gptq_quantizer.py 2>&1 | tail -3
   M="1 2 4 8 16 32 64 128 256 512 1024 2048 4096"; [ "$2" = skinny ] && M="1 2 4 8 16"
   timeout 420 python3 -m kernels.w4a16_tune $OUT/w4a16.json --merge kernels/tuned/w4a16.json --m $M \
     --shapes $SHAPES 2>&1 | tee $OUT/tune.log | grep -E "best|wrote|Error" | cut -c1-150
   cp $OUT/w4a16.json /root/qb/w4a16.json ;;
B) P=bench=perplexity
   run method=gptq method.act_group_aware=true $P
   run method=gptq method.act_group_aware=true method.sym=false $P
   export QUANTBENCH_W4A16_TUNING=/root/qb/w4a16.json
   timeout 280 python3 -m harness.metrics.kernels $OUT --models llama-2-7b llama-3-8b llama-3-70b 2>&1 \
     | grep -E "record|roofline|M=    1 |M=   16 |M= 4096 " | tail -60 ;;
C) # re-tune M <= 256 with CUDA-graph timing (device time, no launch overhead), then the benchmark with it
   timeout 330 python3 -m kernels.w4a16_tune $OUT/w4a16.json --merge kernels/tuned/w4a16.json \
     --m 1 2 4 8 16 32 64 128 256 --shapes $SHAPES 2>&1 | tee $OUT/tune.log | grep -E "best|wrote|Error" | cut -c1-110
   export QUANTBENCH_W4A16_TUNING=$OUT/w4a16.json
   timeout 250 python3 -m harness.metrics.kernels $OUT --models llama-2-7b llama-3-8b llama-3-70b 2>&1 \
     | grep -E "record|roofline|gate_up .*M=    1 |gate_up .*M=   16 |gate_up .*M= 4096 " | tail -40 ;;
esac
