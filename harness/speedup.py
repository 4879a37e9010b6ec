"""`python -m harness.speedup RESULTS... [--out FILE]`: every throughput point of the newest successful run per
(model, method, GPU, setup) as one table, with each method's speedup over the unquantized (`method=none`) run of
the same model, GPU, setup and point (batch size, prompt and generation length). The setup is how decode ran
(cuda_graph, compile, eager), whether projections were fused (`+fused`, model.fuse_projections) and the attention
implementation where it is not SDPA (`+attn=split_kv`, model.attn_implementation), and programmatic dependent launch
(`+pdl`, bench.throughput.pdl): speedups compare like with like. `baseline` says whether the `none` run divided
by ran the same commit (as the runs of one GPU call do) or names its commit."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterable

import pandas as pd

from harness.records import RecordError, iter_records
from harness.report import write_atomic

POINT = ["model", "gpu", "setup", "kind", "batch", "prompt", "gen"]
COMPACT = ["model", "setup", "method", "kind", "batch", "prompt", "decode tok/s", "decode x", "prefill tok/s",
           "prefill x", "peak GiB", "baseline"]


def setup(record: dict, point: dict | None = None) -> str:
    """How a point decoded (its decode_mode; a prefill-only point, or a record without one: the run's requested
    mode), whether the run's projections were fused, its attention implementation unless SDPA, and PDL."""
    t = record["metrics"]["throughput"]
    if point is not None and "decode_mode" not in point and "gen_len" not in point:  # a prefill-only point
        mode = "prefill:" + point.get("prefill_mode", "eager")
    else:
        mode = (point or {}).get("decode_mode") or (record.get("config") or {}).get("bench", {}).get(
            "throughput", {}).get("decode_mode") or t.get("decode_mode") or "?"
    attn = ((record.get("config") or {}).get("model") or {}).get("attn_implementation", "sdpa")
    return (mode + ("+fused" if (record.get("model") or {}).get("fused_projections") else "")
            + ("" if attn == "sdpa" else f"+attn={attn}") + ("+pdl" if (point or {}).get("pdl") else ""))


def _rows(record: dict) -> Iterable[dict]:
    t = record["metrics"]["throughput"]
    base = {"model": record["config"]["model"]["name_or_path"], "method": record["method"]["quant_method"],
            "gpu": record["env"].get("gpu") or "cpu", "created_at": record["created_at"],
            "speed_only": bool(record["method"].get("speed_only")), "git": (record["env"].get("git_sha") or "?")[:7]}
    for kind, points in (("decode", t.get("points", [])), ("prefill", t.get("prefill_points", []))):
        for p in points:
            yield base | {"setup": setup(record, p), "kind": kind, "batch": p["batch_size"], "prompt": p["prompt_len"],
                          "gen": p.get("gen_len", 0),
                          "prefill tok/s": p["prefill_tokens_per_s"], "decode tok/s": p.get("decode_tokens_per_s"),
                          "TTFT ms": 1e3 * p["time_to_first_token_s"],
                          "TPOT ms": 1e3 * p["time_per_output_token_s"] if "time_per_output_token_s" in p else None,
                          "peak GiB": p["peak_memory_bytes"] / 2**30, "weights GiB": t["weight_memory_bytes"] / 2**30,
                          "decode_mode": p.get("decode_mode")}


def points_frame(records: Iterable[dict]) -> pd.DataFrame:
    """One row per throughput point and method: the newest ok run's (a point that fell back to another decode mode
    says so in its own setup and pairs with its like; a prefill-only point pairs by its prefill mode, whichever
    decode mode its run asked for)."""
    runs = [r for r in records if r.get("status") == "ok" and r.get("kind", "run") == "run"
            and "points" in (r.get("metrics") or {}).get("throughput", {})]
    rows = [row for r in sorted(runs, key=lambda r: r["created_at"]) for row in _rows(r)]
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).drop_duplicates(subset=[*POINT, "method"], keep="last").reset_index(drop=True)


def with_speedup(df: pd.DataFrame) -> pd.DataFrame:
    """Adds `decode x` and `prefill x`: tokens/s over the `none` run's at the same point (NaN without one), and
    `baseline`: "same commit" where that run ran the same code, else the commit it ran, so a ratio across
    sessions (whose GPUs and code differ) is not read as one measured side by side."""
    if df.empty:
        return df
    base = df[df["method"] == "none"].set_index(POINT)[["decode tok/s", "prefill tok/s", "git"]]
    out = df.join(base.add_suffix(" (none)"), on=POINT)
    out["decode x"] = out["decode tok/s"] / out["decode tok/s (none)"]
    out["prefill x"] = out["prefill tok/s"] / out["prefill tok/s (none)"]
    paired = out["git (none)"].notna()
    out["baseline"] = ""
    out.loc[paired, "baseline"] = "same commit"
    other = paired & (out["git (none)"] != out["git"])
    out.loc[other, "baseline"] = "commit " + out.loc[other, "git (none)"]
    return out.drop(columns=["decode tok/s (none)", "prefill tok/s (none)", "git (none)", "created_at"]).sort_values(
        ["model", "gpu", "setup", "kind", "prompt", "batch", "method"]).reset_index(drop=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.speedup", description=__doc__)
    ap.add_argument("results", nargs="*", default=["results"], help="record files or directories")
    ap.add_argument("--out", help="also write the table (Markdown) here")
    ap.add_argument("--compact", action="store_true", help=f"only the columns {COMPACT}")
    a = ap.parse_args(argv)
    try:
        table = with_speedup(points_frame(iter_records(a.results)))
        if a.compact and not table.empty:
            table = table[COMPACT]
    except RecordError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = table.to_markdown(index=False, floatfmt=".4g") if not table.empty else "No throughput points recorded."
    if a.out:
        write_atomic(Path(a.out), text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
