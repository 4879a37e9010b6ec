"""`python -m harness.report [RESULTS...] [--out-dir reports]`: render result records as reports/summary.md
(Markdown) and the static HTML dashboard reports/index.html with its plots (harness/dashboard.py)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from pathlib import Path

import pandas as pd

import methods

from harness.records import RecordError, flatten, iter_records

COLUMNS = {
    "config.model.name_or_path": "model",
    "config.method.quant_method": "method",
    "scheme": "scheme",
    "env.gpu": "gpu",
    "metrics.perplexity.dataset": "dataset",
    "metrics.perplexity.seq_len": "seq_len",
    "metrics.perplexity.scored_tokens": "tokens",
    "metrics.perplexity.perplexity": "ppl",
    "ppl_delta_pct": "Δppl %",
    "metrics.throughput.prefill_tokens_per_s": "prefill tok/s",
    "metrics.throughput.decode_tokens_per_s": "decode tok/s",
    "metrics.throughput.peak_memory_bytes": "peak mem (MiB)",
    "env.git_sha": "git",
    "created_at": "date",
}


def _defaults(method: str) -> tuple[dict, dict]:
    """The registered method's option defaults, and the values options had in records written before they
    existed (both empty for an unknown method name)."""
    try:
        cls = methods.get_method_class(method)
    except Exception:
        return {}, {}
    return ({f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING},
            dict(cls.legacy_defaults))


def _fmt(v) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def _scheme(row: pd.Series) -> str:
    """The method's options that differ from its defaults, e.g. `weight_granularity=channel` ("-": defaults)."""
    skip = {"method.quant_method", "method.modules_to_not_convert"}
    defaults, legacy = _defaults(str(row.get("config.method.quant_method", "")))
    values = {c.split(".", 1)[1]: row[c] for c in row.index
              if c.startswith("method.") and c not in skip and _present(row[c])}
    values = {k: v for k, v in legacy.items() if k not in values} | values  # a record from before the option
    parts = []
    for key, value in values.items():
        if key in defaults and _fmt(defaults[key]) == _fmt(value):
            continue
        parts.append(f"{key}={_fmt(value)}")
    return ", ".join(sorted(parts)) or "-"


def _present(v) -> bool:
    return not (isinstance(v, float) and pd.isna(v)) and v is not None


def summary_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Successful runs, newest per (model, method, dataset, device), with perplexity delta vs the `none` run."""
    if df.empty:
        return df
    df = df[(df["status"] == "ok") & (df.get("kind", "run") == "run")].copy()
    df["env.gpu"] = df.get("env.gpu", pd.Series(index=df.index, dtype=object)).fillna("cpu")
    df["scheme"] = df.apply(_scheme, axis=1)
    keys = [c for c in ("config.model.name_or_path", "config.method.quant_method", "scheme", "metrics.perplexity.dataset",
                        "metrics.perplexity.seq_len", "metrics.perplexity.scored_tokens", "env.gpu") if c in df]
    df = df.sort_values("created_at").groupby(keys, dropna=False).tail(1)
    if "metrics.perplexity.perplexity" in df:
        base_keys = [k for k in keys if k not in ("config.method.quant_method", "scheme")]
        base = df[df["config.method.quant_method"] == "none"].set_index(base_keys)["metrics.perplexity.perplexity"]
        joined = df.join(base.rename("_base"), on=base_keys)
        df["ppl_delta_pct"] = 100 * (joined["metrics.perplexity.perplexity"] / joined["_base"] - 1)
    if "metrics.throughput.peak_memory_bytes" in df:
        df["metrics.throughput.peak_memory_bytes"] = df["metrics.throughput.peak_memory_bytes"] / 2**20
    for col in ("metrics.perplexity.seq_len", "metrics.perplexity.scored_tokens"):
        if col in df:
            df[col] = df[col].astype("Int64")
    if "env.git_sha" in df:
        df["env.git_sha"] = df["env.git_sha"].astype(str).str[:8]
    cols = [c for c in COLUMNS if c in df]
    return df[cols].rename(columns=COLUMNS).sort_values(["model", "method", "scheme"]).reset_index(drop=True)


def render_markdown(df: pd.DataFrame, sources: list[str]) -> str:
    lines = ["# quantbench results", "", f"Records from: {', '.join(sources)}", ""]
    table = summary_frame(df)
    if table.empty:
        lines.append("No successful runs recorded.")
    else:
        lines.append(table.to_markdown(index=False, floatfmt=".4g"))
    failed = df[(df["status"] != "ok") & (df["kind"] == "run")] if not df.empty else df
    if not failed.empty:
        lines += ["", "## Failed runs", ""]
        lines.append(failed[["created_at", "config.method.quant_method", "error"]].to_markdown(index=False))
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write text or bytes to `path` through a temp file in the same directory and a rename: readers (a browser,
    CI) never see half a file, and a failed write leaves none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes it 0600; reports are for everyone to read
        with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.report", description=__doc__)
    ap.add_argument("results", nargs="*", default=["results"], help="record files or directories")
    ap.add_argument("--out-dir", default=None,
                    help="where summary.md, index.html and plots/ go (default: reports, or --out's folder)")
    ap.add_argument("--out", default=None, help="the Markdown summary's path (default: OUT_DIR/summary.md)")
    ap.add_argument("--no-html", action="store_true", help="write only the Markdown summary")
    args = ap.parse_args(argv)
    try:
        recs = list(iter_records(args.results))
    except RecordError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    df = pd.DataFrame([flatten(r) for r in recs])
    out_dir = Path(args.out_dir or (Path(args.out).parent if args.out else "reports"))
    out = Path(args.out) if args.out else out_dir / "summary.md"
    write_atomic(out, render_markdown(df, args.results))
    print(f"wrote {out} ({len(df)} records)")
    if not args.no_html:
        try:
            from harness import dashboard
        except ImportError as e:
            print(f"error: the HTML dashboard needs matplotlib ({e}); pip install -e '.[report]', or --no-html",
                  file=sys.stderr)
            return 2
        print(f"wrote {dashboard.build(recs, df, args.results, out_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
