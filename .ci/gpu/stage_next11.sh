#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent; .whl must hold nvidia-ml-py, `bash .ci/gpu/wheels.sh`), prepared
# in the tenth session as the first call of the next, ~6 minutes:
#   1  the Gluon probes: the frag A operand made in its registers against torch (check-a), then the register-A
#      wgmma loop at wait depth 0 against 1 (one block's wgmmas left running while the next block's A
#      is made), correctness over 50 runs each, graph-timed, on three shapes; then the Gluon frag kernel
#      (`gluon_frag_probe.py`) against the reference and timed beside the tuned W4A16 and cuBLAS fp16 at
#      M = 128-1024 ($OUT/gluon_probe.log)
#   2  the block-FP8 timing question: the kernel benchmark's FP8 rows on Llama-3-70B at M = 1024 and 4096, now
#      with the SM clock and power of every point (`gpu_state`), then the probe of call 6 alone
#      -> $OUT/records.tar, $OUT/fp8_probe.log
source .ci/gpu/env.sh || exit 1
python3 -c "import pynvml" || echo "pynvml missing: run bash .ci/gpu/wheels.sh and carry .whl"
{ timeout 90 python3 .ci/gpu/gluon_rs_probe.py check-a 2>&1 | grep -v Warning | tail -5
  for shape in "57344 8192 128" "57344 8192 256" "8192 8192 128"; do
    timeout 90 python3 .ci/gpu/gluon_rs_probe.py run $shape 2>&1 | grep -v Warning | tail -3
  done
  timeout 150 python3 .ci/gpu/gluon_frag_probe.py run 128 128 8 2>&1 | grep -v Warning | tail -14
  timeout 90 python3 .ci/gpu/gluon_frag_probe.py run 16 256 8 1 16 2>&1 | grep -v Warning | tail -8
  } | tee $OUT/gluon_probe.log
timeout 150 python3 -m harness bench=kernels gpu=h100 "bench.kernels.models=[llama-3-70b]" \
  "bench.kernels.m_values=[1024,4096]" \
  "bench.kernels.backends=[cublas_bfloat16,scaled_mm_tensor,triton_fp8_block128]" \
  results_dir=$OUT/h100 progress=false 2>&1 | tee $OUT/fp8_kernels.log | grep -E "record|Error|MHz" | cut -c1-140
timeout 60 python3 .ci/gpu/fp8_block_probe.py 8192x57344:4096 8192x57344:1024 2>&1 | tee $OUT/fp8_probe.log
tar -C $OUT -cf $OUT/records.tar h100 && rm -rf $OUT/h100
true
