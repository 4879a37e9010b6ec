"""How our kernels launch: the interpreter switch, host-side ceil-division, and programmatic dependent launch
(PDL, sm_90+). Under PDL a kernel may start while the kernel before it in the stream finishes; it waits
(griddepcontrol.wait) only before reading what earlier kernels wrote. A decode step is a chain of small kernels
whose launch and first-load latency PDL overlaps with the previous kernel's tail; the harness turns it on for a
compiled decode step together with Inductor's own PDL (`torch._inductor.config.triton.enable_pdl`)."""

from __future__ import annotations

import contextlib
import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs
    triton = None

_PDL = [False]
# Diagnostic switches (environment), for taking PDL apart on a GPU; a record lists those set (env.diagnostics):
#   QUANTBENCH_PDL_KERNELS=0         our kernels keep plain launches under `programmatic_launch`
#   QUANTBENCH_PDL_INDUCTOR=0        Inductor's kernels do (harness.metrics.decode.pdl_scope)
#   QUANTBENCH_GEMV_PDL_PREFETCH=N   K-blocks the W4A16 gemv asks L2 for before it waits (default 0)
#   QUANTBENCH_GEMV_PDL_TRIGGER=late the gemv lets the next kernel launch after its K loop, not at its start
DIAGNOSTICS = ("QUANTBENCH_PDL_KERNELS", "QUANTBENCH_PDL_INDUCTOR", "QUANTBENCH_GEMV_PDL_PREFETCH",
               "QUANTBENCH_GEMV_PDL_TRIGGER")


def diagnostics() -> dict[str, str]:
    """The diagnostic switches set in the environment."""
    return {name: os.environ[name] for name in DIAGNOSTICS if name in os.environ}


def interpreted() -> bool:
    """Triton kernels run on the CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def cdiv(a: int, b: int) -> int:  # triton.cdiv is a jit function: slow on the host
    return -(-a // b)


@contextlib.contextmanager
def programmatic_launch(enabled: bool = True):
    """Within the block, kernels that support it launch with PDL on GPUs that have it (`use_pdl`). Launches
    captured into a CUDA graph keep it: turn it on around the capture."""
    before = _PDL[0]
    _PDL[0] = enabled
    try:
        yield
    finally:
        _PDL[0] = before


def use_pdl(device: torch.device) -> bool:
    """Launch with PDL now: switched on (`programmatic_launch`), a CUDA device of compute capability >= 9, and
    compiled kernels (the interpreter has no grid dependency control)."""
    return (_PDL[0] and device.type == "cuda" and not interpreted() and triton is not None
            and os.environ.get("QUANTBENCH_PDL_KERNELS", "1") != "0"
            and torch.cuda.get_device_capability(device)[0] >= 9)


if triton is not None:

    @triton.jit
    def prefetch_l2(ptrs):
        """Ask L2 for the 128-byte lines at `ptrs` (one address per line is enough) without waiting for them: a
        PDL kernel streams its weights in while the previous kernel still runs."""
        tl.inline_asm_elementwise("prefetch.global.L2 [$1];\n\tmov.u32 $0, 0;", "=r,l", [ptrs], dtype=tl.int32,
                                  is_pure=False, pack=1)

    @triton.jit
    def pdl_launch_dependents():
        """Let the next kernel launch (it waits in turn before reading what this one writes)."""
        tl.extra.cuda.gdc_launch_dependents()

    @triton.jit
    def pdl_wait_only():
        """Wait until the kernels this one depends on have finished and their writes are visible."""
        tl.extra.cuda.gdc_wait()

    @triton.jit
    def pdl_wait():
        """Wait until the kernels this one depends on have finished and their writes are visible; then let the
        next kernel launch (it waits in turn before reading what this one writes)."""
        pdl_wait_only()
        pdl_launch_dependents()
