#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), about 7 minutes: PDL taken apart on the GPTQ batch-1 decode
# (compiled + fused, split-KV attention, Llama-2-7B shape), one process a run, with the diagnostic switches of
# kernels/launch.py (each record lists those set under env.diagnostics):
#   off | all on | ours only (QUANTBENCH_PDL_INDUCTOR=0) | Inductor's only (QUANTBENCH_PDL_KERNELS=0)
#   | no L2 prefetch in the gemv (QUANTBENCH_GEMV_PDL_PREFETCH=0) | gemv trigger after its loop (..._TRIGGER=late)
# Records are packed into $OUT/records.tgz (a call returns at most 8 files).
source .ci/gpu/env.sh || exit 1
timeout 60 python3 -m pytest -q tests/test_kernels_w4a16.py -k programmatic 2>&1 | grep -E "passed|failed|^E |^FAILED" | tail -4
common="model=llama2_7b method=${METHOD:-gptq} bench=throughput_gpu bench.throughput.decode_mode=compile
  model.fuse_projections=true bench.throughput.batch_sizes=[1] bench.throughput.prefill_lens=[]
  model.attn_implementation=split_kv bench.throughput.profile_steps=10 results_dir=$OUT/h100 progress=false"
run() {
  echo "== $*"
  env "$@" timeout 100 python3 -m harness $common 2>&1 | grep -E "quantbench\] method|Error" | cut -c1-160
}
run PDL_OFF=1 bench.throughput.pdl=false
run PDL_ALL=1 bench.throughput.pdl=true
run QUANTBENCH_PDL_INDUCTOR=0 bench.throughput.pdl=true
run QUANTBENCH_PDL_KERNELS=0 bench.throughput.pdl=true
run QUANTBENCH_GEMV_PDL_PREFETCH=0 bench.throughput.pdl=true
run QUANTBENCH_GEMV_PDL_TRIGGER=late bench.throughput.pdl=true
python3 - <<'PY'
import glob, json, os
for f in sorted(glob.glob(os.environ["OUT"] + "/h100/*.json")):
    r = json.load(open(f))
    p = r["metrics"]["throughput"]["points"][0]
    prof = p.get("step_profile") or {}
    print(p.get("pdl"), r["env"].get("diagnostics"), round(p["decode_tokens_per_s"], 1),
          {k: round(v, 3) for k, v in (prof.get("ms_per_step") or {}).items()})
PY
tar -C $OUT -czf $OUT/records.tgz h100 && rm -rf $OUT/h100
