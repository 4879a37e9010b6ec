"""Result records: one JSON file per run, schema-versioned, written atomically; loaded back as a DataFrame."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import socket
import subprocess
import tempfile
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

SCHEMA_VERSION = 1
REQUIRED_KEYS = ("schema_version", "run_id", "created_at", "status", "config", "config_hash", "metrics", "env",
                 "timings")


class RecordError(ValueError):
    """A file that is not a valid result record."""


# Run plumbing: where records and checkpoints go, progress bars, re-run policy. Not part of what was measured.
PLUMBING_KEYS = ("results_dir", "export_dir", "progress", "force", "gpu_pool", "isolate")


def config_hash(config: dict) -> str:
    """Stable hash of the resolved config (what the run measured, not where it ran or where it wrote)."""
    measured = {k: v for k, v in config.items() if k not in PLUMBING_KEYS}
    blob = json.dumps(measured, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def git_info(repo_dir: Path | None = None) -> dict:
    """Commit of the code that ran; QUANTBENCH_GIT_SHA stands in where the tree travelled without .git."""
    if os.environ.get("QUANTBENCH_GIT_SHA"):
        return {"git_sha": os.environ["QUANTBENCH_GIT_SHA"], "git_dirty": os.environ.get("QUANTBENCH_GIT_DIRTY") == "1"}
    repo_dir = repo_dir or Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=repo_dir, capture_output=True,
                             text=True, timeout=10)
        sha = out.stdout.strip() if out.returncode == 0 else None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo_dir,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        sha, dirty = None, None
    return {"git_sha": sha, "git_dirty": dirty if sha else None}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def tuning_tables() -> dict:
    """Which kernel tuning table each kernel read (path and content hash): a re-tuned table changes the tiles."""
    import hashlib

    from kernels import fp8, w4a16

    out = {}
    for name, mod in (("w4a16", w4a16), ("fp8", fp8)):
        path = os.environ.get(mod.TUNING_ENV, mod.TUNED_FILE)
        try:
            digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
        except OSError:
            digest = None  # no table: the kernel's heuristics apply
        out[name] = {"path": os.path.relpath(path, Path(__file__).resolve().parent.parent), "sha256": digest}
    return out


def environment() -> dict:
    """Where and with what a run happened."""
    import torch

    env = {
        "host": socket.gethostname(), "platform": platform.platform(), "python": platform.python_version(),
        "cpu": _cpu_name(), "cpu_count": os.cpu_count(),
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "triton": _version("triton"), "transformers": _version("transformers"), "quantbench": _version("quantbench"),
        "gpu": None, "gpu_count": 0, "gpu_capability": None, "driver": None,
    }
    if torch.cuda.is_available():
        index = torch.cuda.current_device()  # the GPU this run uses (harness.gpu.use_pool may pick one)
        env["gpu"] = torch.cuda.get_device_name(index)
        env["gpu_index"] = index
        env["gpu_count"] = torch.cuda.device_count()
        env["gpu_capability"] = ".".join(map(str, torch.cuda.get_device_capability(index)))
        try:
            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=20).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            pass
    env.update(git_info())
    env["tuning"] = tuning_tables()
    from kernels.launch import diagnostics

    if diagnostics():
        env["diagnostics"] = diagnostics()
    return env


def new_record(config: dict, kind: str = "run") -> dict:
    return {
        "schema_version": SCHEMA_VERSION, "kind": kind, "run_id": uuid.uuid4().hex[:12],
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "status": "running",
        "config": config, "config_hash": config_hash(config), "metrics": {}, "env": environment(),
        "timings": {}, "error": None, "command": None,
    }


def record_filename(record: dict) -> str:
    cfg = record["config"]
    model = str(cfg.get("model", {}).get("name_or_path", "model")).replace("/", "_").replace(":", "_")
    method = cfg.get("method", {}).get("quant_method", "none")
    stamp = record["created_at"].replace(":", "").replace("-", "").replace("+0000", "Z")
    if record.get("kind", "run") != "run":  # a kernel benchmark measures no model or method
        return f"{stamp}_{record['kind']}_{record['run_id']}.json"
    return f"{stamp}_{model}_{method}_{record['run_id']}.json"


def write_record(record: dict, directory: str | os.PathLike) -> Path:
    """Write atomically: a temp file in the same directory, fsync, rename. Readers never see half a record."""
    validate(record)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / record_filename(record)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, indent=2, sort_keys=True, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def find_done(directory: str | os.PathLike, config_hash: str, env: dict) -> Path | None:
    """A successful run record in `directory` for the same config hash, code version (git sha, clean tree),
    diagnostic switches and machine (GPU, or host when on CPU); None if there is none. Unreadable files are passed
    over."""
    if not env.get("git_sha") or env.get("git_dirty"):
        return None  # uncommitted code: no version to match against
    machine = ("gpu", "host") if env.get("gpu") in (None, "cpu") else ("gpu",)
    for path in sorted(Path(directory).glob("*.json"), reverse=True):
        try:
            r = read_record(path)
        except RecordError:
            continue
        e = r.get("env") or {}
        if (r.get("kind") == "run" and r.get("status") == "ok" and r.get("config_hash") == config_hash
                and e.get("git_sha") == env["git_sha"] and not e.get("git_dirty")
                and e.get("diagnostics") == env.get("diagnostics")  # switches outside the config (kernels.launch)
                and all(e.get(k) == env.get(k) for k in machine)):
            return path
    return None


def validate(record: Any) -> dict:
    if not isinstance(record, dict):
        raise RecordError("a record is a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise RecordError(f"record lacks {missing}")
    if record["schema_version"] != SCHEMA_VERSION:
        raise RecordError(f"record schema_version {record['schema_version']} is not {SCHEMA_VERSION}; "
                          "regenerate it or upgrade quantbench")
    return record


def read_record(path: str | os.PathLike) -> dict:
    try:
        return validate(json.loads(Path(path).read_text()))
    except json.JSONDecodeError as e:
        raise RecordError(f"{path}: not JSON ({e})") from e


def iter_records(paths: Iterable[str | os.PathLike]) -> Iterable[dict]:
    """Records from files and directories (recursively, *.json); unreadable files raise RecordError."""
    for p in paths:
        p = Path(p)
        files = sorted(p.rglob("*.json")) if p.is_dir() else [p]
        for f in files:
            if not f.name.startswith("."):
                yield read_record(f)


def flatten(record: dict) -> dict:
    """One flat row per record: config.*, metrics.*, env.*, timings.* columns."""
    row = {k: record.get(k) for k in ("run_id", "created_at", "status", "config_hash", "kind", "error")}

    def walk(prefix: str, obj: Any) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(f"{prefix}.{k}", v)
        else:
            row[prefix] = obj if not isinstance(obj, list) else json.dumps(obj)

    for section in ("config", "method", "metrics", "env", "timings"):
        walk(section, record.get(section) or {})
    return row


def load_frame(paths: Iterable[str | os.PathLike]):
    import pandas as pd

    return pd.DataFrame([flatten(r) for r in iter_records(paths)])
