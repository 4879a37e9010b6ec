"""The static HTML dashboard (reports/index.html + reports/plots/*.png): tables and plots of the result records,
relative links only, no JavaScript, so it opens from file:// or any static host. Every file is written atomically."""

from __future__ import annotations

import html
import io
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

from harness import plots
from harness.report import summary_frame, write_atomic

matplotlib.use("Agg")

STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1400px;padding:0 1em;color:#222}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table.data{border-collapse:collapse;font-size:12px;margin:.5em 0}
table.data th,table.data td{border:1px solid #ddd;padding:3px 6px;text-align:right}
table.data th{background:#f4f4f4}table.data td:first-child,table.data th:first-child{text-align:left}
figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:12px;color:#555}.note{color:#8a5a00;font-size:13px}.meta{color:#555;font-size:13px}"""


def _table(df: pd.DataFrame, index: bool = False) -> str:
    return df.to_html(index=index, border=0, classes="data", na_rep="", float_format=lambda v: f"{v:.4g}")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def _geomean(x: pd.Series) -> float:
    return float(np.exp(np.log(x).mean()))


def kernel_label(cfg) -> str:
    """A short name of the config a W4A16 row ran (`kernels.w4a16.chosen_config`), e.g. "gluon x2 128 tokens",
    "frag 128x128 split 4", "dequant"."""
    if not isinstance(cfg, dict):
        return ""
    path = cfg.get("path", "?")
    if path == "gluon":
        return f"gluon x{cfg.get('consumers', 1)}" + (f" {cfg['block_m']} tokens" if "block_m" in cfg else "")
    if path == "dequant":
        return "dequant"
    tile = "x".join(str(cfg[k]) for k in ("block_m", "block_n") if k in cfg)
    extra = [f"split {cfg['split_k']}"] if cfg.get("split_k", 1) > 1 else []
    extra += [f"stream-K {cfg['stream_k']}"] if cfg.get("stream_k") else []
    return " ".join([path, tile] + extra).strip()


def kernel_choices(kernels: pd.DataFrame) -> pd.DataFrame:
    """(GPU, model, layer, backend) x M: the kernel label of each row that recorded one."""
    if kernels.empty or "kernel" not in kernels.columns:
        return pd.DataFrame()
    k = kernels[kernels["kernel"].map(lambda c: isinstance(c, dict))]
    if k.empty:
        return pd.DataFrame()
    k = k.assign(ran=k["kernel"].map(kernel_label))
    return k.pivot_table(index=["gpu", "model", "layer", "backend"], columns="M", values="ran", aggfunc="first")


def kernel_tables(kernels: pd.DataFrame, records: list[dict]) -> str:
    """Speedup vs cuBLAS bf16 (geometric mean over the model's layer shapes) by backend and M, and the roofline
    each kernel record measured."""
    parts = []
    if not kernels.empty:
        pivot = kernels.dropna(subset=["speedup"]).pivot_table(index=["gpu", "model", "backend"], columns="M",
                                                               values="speedup", aggfunc=_geomean)
        parts += [f"<h3>Speedup vs {plots.KERNEL_BASELINE} by M (geometric mean over layer shapes)</h3>",
                  _table(pivot, index=True)]
    ran = kernel_choices(kernels)
    if not ran.empty:
        parts += ["<h3>Which of our W4A16 kernels ran at each point (path, tiles; the tuned table's choice)</h3>",
                  _table(ran, index=True)]
    roof = [{"gpu": (r.get("env") or {}).get("gpu"), "date": r["created_at"],
             "git": str((r.get("env") or {}).get("git_sha"))[:8], "status": r["status"]} | {
                k: v for k, v in (r.get("metrics") or {}).get("roofline", {}).items() if not isinstance(v, dict)}
            for r in records if r.get("kind") == "kernels" and r.get("status") in ("ok", "partial")]
    if roof:
        parts += ["<h3>Roofline measured in each kernel run (fractions above are of these)</h3>",
                  _table(pd.DataFrame(roof).sort_values("date"))]
    return "\n".join(parts)


def environments(df: pd.DataFrame) -> pd.DataFrame:
    """Machines and software versions the records come from, with how many records each and when."""
    cols = [c for c in ("env.gpu", "env.driver", "env.torch", "env.triton", "env.transformers", "env.git_sha",
                        "env.host") if c in df]
    if df.empty or not cols:
        return pd.DataFrame()
    d = df[cols + ["created_at", "kind"]].copy()
    d["env.gpu"] = d["env.gpu"].fillna("cpu") if "env.gpu" in d else "cpu"
    if "env.git_sha" in d:
        d["env.git_sha"] = d["env.git_sha"].astype(str).str[:8]
    out = (d.fillna("").groupby(cols).agg(records=("kind", "size"), first=("created_at", "min"),
                                          last=("created_at", "max")).reset_index())
    return out.rename(columns=lambda c: c.removeprefix("env."))


def render_html(sections: list[tuple[str, str]], meta: str) -> str:
    body = "\n".join(f'<section id="{plots.slug(title)}"><h2>{html.escape(title)}</h2>\n{content}</section>'
                     for title, content in sections)
    nav = " · ".join(f'<a href="#{plots.slug(t)}">{html.escape(t)}</a>' for t, _ in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>quantbench results</title>\n'
            f'<link rel="icon" href="data:,">\n<style>{STYLE}</style></head>\n<body><h1>quantbench results</h1>\n'
            f'<p class="meta">{meta}</p><nav>{nav}</nav>\n{body}\n</body></html>\n')


def build(records: list[dict], df: pd.DataFrame, sources: list[str], out_dir: Path) -> Path:
    """Write out_dir/index.html and out_dir/plots/*.png from the records; returns the HTML path. Plots of an
    earlier build that this one no longer makes are removed, so the folder always matches the page."""
    out_dir = Path(out_dir)
    summary = summary_frame(df)
    batches = plots.batch_frame(df, records)
    kernels = plots.kernel_frame(records)
    written: set[str] = set()

    def figures(result: tuple[list, list[str]]) -> str:
        figs, notes = result
        parts = [f'<p class="note">{html.escape(n)}</p>' for n in notes]
        for name, title, fig in figs:
            write_atomic(out_dir / "plots" / f"{name}.png", _png(fig))
            written.add(f"{name}.png")
            parts.append(f'<figure><img src="plots/{html.escape(name)}.png" alt="{html.escape(title)}">'
                         f"<figcaption>{html.escape(title)}</figcaption></figure>")
        return "\n".join(parts)

    runs = df[df["kind"] == "run"] if not df.empty else df
    failed = runs[runs["status"] != "ok"] if not runs.empty else runs
    fail_cols = [c for c in ("created_at", "config.model.name_or_path", "config.method.quant_method", "env.gpu",
                             "error") if c in failed]
    sections = [
        ("Results", _table(summary) if not summary.empty else "<p>No successful runs recorded.</p>"),
        ("Accuracy vs speed", figures(plots.pareto_figures(summary))),
        ("Perplexity delta vs baseline", figures(plots.ppl_delta_figures(summary))),
        ("Speedup vs batch size", figures(plots.batch_figures(batches))
         + (_table(batches) if batches["batch"].nunique() > 1 else "")),
        ("Kernels", figures(plots.kernel_figures(kernels)) + kernel_tables(kernels, records)),
        ("Failed runs", _table(failed[fail_cols]) if not failed.empty else "<p>None.</p>"),
        ("Environments", _table(environments(df))),
    ]
    n_ok = int((runs["status"] == "ok").sum()) if not runs.empty else 0
    n_kernel = int((df["kind"] == "kernels").sum()) if not df.empty else 0
    dates = f", {df['created_at'].min()} to {df['created_at'].max()}" if not df.empty else ""
    meta = html.escape(f"{len(df)} records from {', '.join(sources)}: {n_ok} ok runs, {len(failed)} failed, "
                       f"{n_kernel} kernel benchmarks{dates}. Built by python -m harness.report.")
    page = out_dir / "index.html"
    write_atomic(page, render_html(sections, meta))
    for stale in (out_dir / "plots").glob("*.png"):
        if stale.name not in written:
            stale.unlink()
    return page
