#!/usr/bin/env bash
# On the CPU machine, before the first device call of a session: the wheels the device machine lacks (it has
# torch, triton, transformers, pandas, matplotlib, but no network; nvidia-ml-py gives the benchmark its clock
# readings), into the git-ignored .whl/ that every stage_*.sh installs from (.ci/gpu/env.sh). Carry `.whl` in each
# `run`. antlr4-python3-runtime 4.9.3 (omegaconf's
# parser) and gemlite exist only as sdists: built into wheels here.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .whl
pip download -q --no-deps -d .whl hydra-core==1.3.2 omegaconf==2.3.0 tabulate gguf accelerate nvidia-ml-py
pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3 gemlite
ls .whl
