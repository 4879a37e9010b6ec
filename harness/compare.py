"""`python -m harness.compare BASELINE CURRENT`: the regression gate. Matches each successful baseline point
(model, method, options, dataset, GPU) with the current run's, reports perplexity and throughput changes, and
exits 1 when a point got worse beyond the thresholds or is missing / failed now (nightly CI fails on that)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from harness.records import RecordError, load_frame
from harness.report import summary_frame, write_atomic

KEYS = ["model", "method", "scheme", "dataset", "seq_len", "tokens", "gpu"]
SPEED = {"prefill tok/s": "prefill", "decode tok/s": "decode"}


def compare(base: pd.DataFrame, cur: pd.DataFrame, max_ppl_pct: float, max_slowdown_pct: float,
            where: str | None = None) -> pd.DataFrame:
    """One row per baseline point (those matching the pandas query `where`, if given, over the summary columns):
    changes in % and `regression` (why, or "" when it passes)."""
    b, c = summary_frame(base), summary_frame(cur)
    if where and not b.empty:
        try:
            b = b.query(where)
        except Exception as e:
            raise ValueError(f"--where {where!r} is not a valid pandas query over the columns {list(b)}: {e}") from e
    if b.empty:
        return pd.DataFrame(columns=KEYS + ["regression"])
    keys = [k for k in KEYS if k in b]
    if c.empty or not set(keys) <= set(c):
        c = b.iloc[:0]  # nothing succeeded now: every baseline point is missing (not a crash on absent columns)
    m = b.merge(c, on=keys, how="left", suffixes=("_base", ""), indicator=True)
    out = m[keys].copy()
    out["ppl_base"], out["ppl"] = m.get("ppl_base"), m.get("ppl")
    out["Δppl %"] = 100 * (m.get("ppl") / m.get("ppl_base") - 1)
    for col, name in SPEED.items():
        if f"{col}_base" in m:
            out[f"Δ{name} %"] = 100 * (m[col] / m[f"{col}_base"] - 1)

    def why(i: int) -> str:
        if m.loc[i, "_merge"] == "left_only":
            return "missing or failed"
        reasons = []
        if pd.notna(out.loc[i, "Δppl %"]) and out.loc[i, "Δppl %"] > max_ppl_pct:
            reasons.append(f"ppl +{out.loc[i, 'Δppl %']:.2f}%")
        for name in SPEED.values():
            d = out.loc[i].get(f"Δ{name} %")
            if d is not None and pd.notna(d) and d < -max_slowdown_pct:
                reasons.append(f"{name} {d:.1f}%")
        return ", ".join(reasons)

    out["regression"] = [why(i) for i in out.index]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.compare", description=__doc__)
    ap.add_argument("baseline", nargs="+", help="baseline record files or directories")
    ap.add_argument("--current", nargs="+", required=True, help="today's record files or directories")
    ap.add_argument("--max-ppl-increase-pct", type=float, default=0.5)
    ap.add_argument("--max-slowdown-pct", type=float, default=10.0)
    ap.add_argument("--where", default=None,
                    help="compare only the baseline points matching this pandas query, e.g. \"scheme == '-'\" "
                         "(each method's default options: what +sweep=nightly runs)")
    ap.add_argument("--out", default="reports/compare.md")
    a = ap.parse_args(argv)
    try:
        base, cur = load_frame(a.baseline), load_frame(a.current)
    except RecordError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        table = compare(base, cur, a.max_ppl_increase_pct, a.max_slowdown_pct, a.where)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    bad = table[table["regression"] != ""]
    text = "\n".join([
        "# quantbench comparison", "",
        f"Baseline: {', '.join(a.baseline)}; current: {', '.join(a.current)}; thresholds: perplexity "
        f"+{a.max_ppl_increase_pct}%, throughput -{a.max_slowdown_pct}%"
        + (f"; baseline points where {a.where}." if a.where else "."), "",
        table.to_markdown(index=False, floatfmt=".4g") if not table.empty else "No baseline points.", "",
        f"**{len(bad)} regression(s)**" if len(bad) else "No regressions.", ""])
    write_atomic(Path(a.out), text)
    print(text)
    return 1 if len(bad) else 0


if __name__ == "__main__":
    sys.exit(main())
