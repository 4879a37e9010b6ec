#!/usr/bin/env bash
# Device machine (carry .whl and .ci/gpu/.sent), about 7 minutes: PDL taken apart on the GPTQ batch-1 decode
# (compiled + fused, split-KV attention, Llama-2-7B shape), one process a run, with the diagnostic switches of
# kernels/launch.py (each record lists those set under env.diagnostics):
#   off | all on | ours only (QUANTBENCH_PDL_INDUCTOR=0) | Inductor's only (QUANTBENCH_PDL_KERNELS=0)
#   | no L2 prefetch in the gemv (QUANTBENCH_GEMV_PDL_PREFETCH=0) | gemv trigger after its loop (..._TRIGGER=late)
# As run in call 29 (git 7f8b73d), when the gemv prefetched 2 K-blocks by default; since bcad633 it prefetches
# none, so "all on" is the no-prefetch case and QUANTBENCH_GEMV_PDL_PREFETCH=2 measures the prefetch.
# Records are packed into $OUT/records.tgz (a call returns at most 8 files).
source .ci/gpu/env.sh || exit 1
timeout 60 python3 -m pytest -q tests/test_kernels_w4a16.py -k programmatic 2>&1 | grep -E "passed|failed|^E |^FAILED" | tail -4
common="model=llama2_7b method=${METHOD:-gptq} bench=throughput_gpu bench.throughput.decode_mode=compile
  model.fuse_projections=true bench.throughput.batch_sizes=[1] bench.throughput.prefill_lens=[]
  model.attn_implementation=split_kv bench.throughput.profile_steps=10 results_dir=$OUT/h100 progress=false
  force=true"
run() {  # run ENV_ASSIGNMENT PDL: one run with that switch set (a dummy assignment for none)
  echo "== $1 pdl=$2"
  env "$1" timeout 100 python3 -m harness $common bench.throughput.pdl=$2 2>&1 \
    | grep -E "quantbench\] (method|skip)|Error" | cut -c1-160
}
[ -z "$SKIP_OFF" ] && run PDL=off false
run PDL=all true
run QUANTBENCH_PDL_INDUCTOR=0 true
run QUANTBENCH_PDL_KERNELS=0 true
run QUANTBENCH_GEMV_PDL_PREFETCH=2 true
run QUANTBENCH_GEMV_PDL_TRIGGER=late true
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
