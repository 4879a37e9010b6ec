"""The dashboard's figures (matplotlib, no pyplot state) and the frames they are drawn from: accuracy vs speed
Pareto fronts, perplexity deltas, speedup vs batch size, and kernel speedup / roofline fraction vs M.

Each `*_figures` function returns `(figures, notes)`: figures as (slug, title, Figure), notes saying what could
not be drawn and why (so the page says so instead of silently leaving a plot out)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from harness.metrics.kernels import matrix_rate_of, roofline_fraction
from harness.report import _scheme

KERNEL_BASELINE = "cublas_bfloat16"
# A baseline measurement whose median took this many times its fastest run was disturbed for at least half its
# runs (another process, a clock drop): speedups against it are left out rather than shown 10x high (Llama-3-8B o
# at M = 8 in 20261127T202610Z: cuBLAS bf16 median 198 us, min 22 us). One slow run (a high max) leaves the median,
# and the point, alone.
BASELINE_MAX_SPREAD = 2.0
METHOD_COLORS = {"none": "C0", "fp8": "C1", "rtn": "C2", "gptq": "C3", "awq": "C4"}  # same colour on every plot
BATCH_COLUMNS = {
    "config.model.name_or_path": "model", "env.gpu": "gpu", "config.method.quant_method": "method",
    "scheme": "scheme", "metrics.throughput.batch_size": "batch", "metrics.throughput.prompt_len": "prompt_len",
    "metrics.throughput.gen_len": "gen_len", "metrics.throughput.prefill_tokens_per_s": "prefill tok/s",
    "metrics.throughput.decode_tokens_per_s": "decode tok/s", "created_at": "date",
}


def slug(*parts: object) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", "_".join(map(str, parts))).strip("-").lower()


def label(method: str, scheme: str) -> str:
    return method if scheme in ("-", "", None) else f"{method} ({scheme})"


def color(method: str) -> str:
    return METHOD_COLORS.get(method, "C7")


def pareto_front(speed: pd.Series, ppl: pd.Series) -> pd.Series:
    """True for the points no other point beats on both axes (higher speed and lower perplexity)."""
    order = sorted(speed.index, key=lambda i: (-speed[i], ppl[i]))
    best, front = np.inf, pd.Series(False, index=speed.index)
    for i in order:
        if ppl[i] < best:
            front[i], best = True, ppl[i]
    return front


def pareto_figures(summary: pd.DataFrame) -> tuple[list, list[str]]:
    """Perplexity vs decode tokens/s per (model, GPU), the Pareto front joined by a line."""
    figs, notes = [], []
    need = {"ppl", "decode tok/s"}
    if summary.empty or not need <= set(summary):
        return figs, ["Accuracy vs speed: no run has both perplexity and throughput."]
    pts = summary.dropna(subset=list(need))
    for (model, gpu), g in pts.groupby(["model", "gpu"]):
        front = pareto_front(g["decode tok/s"], g["ppl"])
        fig = Figure(figsize=(10, 4.8), layout="constrained")
        ax, key = fig.subplots(1, 2, width_ratios=[2.2, 1])
        for method, m in g.groupby("method"):
            ax.scatter(m["decode tok/s"], m["ppl"], label=method, s=36, zorder=3, color=color(method))
        f = g[front].sort_values("decode tok/s")
        ax.plot(f["decode tok/s"], f["ppl"], "k--", lw=1, zorder=2, label="Pareto front")
        ax.scatter(f["decode tok/s"], f["ppl"], s=140, facecolors="none", edgecolors="k", zorder=4)
        # Points are numbered (options labels overlap where methods cluster); the key on the right names them.
        g = g.sort_values("ppl")
        lines = []
        for n, (i, r) in enumerate(g.iterrows(), 1):
            ax.annotate(str(n), (r["decode tok/s"], r["ppl"]), fontsize=7, xytext=(4, 3 - 9 * (n % 2)),
                        textcoords="offset points")
            lines.append(f"{n}{'*' if front[i] else ' '} {label(r['method'], r['scheme'])}")
        key.axis("off")
        key.text(0, 1, "\n".join(lines + ["", "* on the Pareto front"]), va="top", fontsize=7, family="monospace",
                 wrap=True)
        ax.set(xlabel="decode tokens/s (higher is better)", ylabel="perplexity (lower is better)",
               title=f"{model} on {gpu}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        figs.append((slug("pareto", model, gpu), f"Accuracy vs speed: {model} on {gpu}", fig))
    return figs, notes


def ppl_delta_figures(summary: pd.DataFrame) -> tuple[list, list[str]]:
    """Perplexity change vs the unquantized run of the same model, dataset and GPU, one bar per method/options."""
    if summary.empty or "Δppl %" not in summary:
        return [], ["Perplexity delta: no run has perplexity."]
    figs, notes = [], []
    pts = summary.dropna(subset=["Δppl %"])
    pts = pts[pts["method"] != "none"]
    for (model, gpu, dataset), g in pts.groupby(["model", "gpu", "dataset"]):
        g = g.sort_values("Δppl %")
        fig = Figure(figsize=(9, 1.1 + 0.32 * len(g)), layout="constrained")
        ax = fig.add_subplot()
        names = [label(m, s) for m, s in zip(g["method"], g["scheme"])]
        bars = ax.barh(range(len(g)), g["Δppl %"], color=[color(m) for m in g["method"]])
        ax.bar_label(bars, fmt="%+.1f%%", fontsize=7, padding=2)
        ax.set_yticks(range(len(g)), names, fontsize=7)
        ax.margins(x=0.15)
        ax.set_xlabel("perplexity vs unquantized (%)")
        ax.set_title(f"{model} on {gpu}, {dataset}", fontsize=10, loc="left")
        ax.grid(axis="x", alpha=0.3)
        figs.append((slug("ppl-delta", model, gpu, dataset), f"Perplexity delta: {model} on {gpu}, {dataset}", fig))
    if not figs:
        notes.append("Perplexity delta: no quantized run has an unquantized (method=none) run to compare with.")
    return figs, notes


def batch_frame(df: pd.DataFrame, records: list[dict] = ()) -> pd.DataFrame:
    """Throughput per (model, GPU, method, options, batch size), newest record each, with decode and prefill
    speedup vs method=none at the same batch size, prompt and generation length. Records holding several batch
    sizes (`metrics.throughput.points`) contribute every decode point (harness.speedup's table); older records
    one row each."""
    points = _points_rows(records)
    if df.empty or "metrics.throughput.batch_size" not in df:
        return points if not points.empty else pd.DataFrame(columns=list(BATCH_COLUMNS.values()))
    d = df[(df["status"] == "ok") & (df["kind"] == "run")].dropna(subset=["metrics.throughput.decode_tokens_per_s"])
    if "metrics.throughput.points" in d:
        d = d[d["metrics.throughput.points"].isna()]  # those come from `points`
    if d.empty:
        return points if not points.empty else pd.DataFrame(columns=list(BATCH_COLUMNS.values()))
    d = d.assign(**{"env.gpu": d.get("env.gpu", pd.Series(index=d.index, dtype=object)).fillna("cpu")})
    d = d.assign(scheme=d.apply(_scheme, axis=1))
    d = d[[c for c in BATCH_COLUMNS if c in d]].rename(columns=BATCH_COLUMNS)
    keys = ["model", "gpu", "method", "scheme", "batch", "prompt_len", "gen_len"]
    d = d.sort_values("date").groupby(keys, dropna=False).tail(1)
    at = ["model", "gpu", "batch", "prompt_len", "gen_len"]
    base = d[d["method"] == "none"].set_index(at)[["decode tok/s", "prefill tok/s"]]
    d = d.join(base.add_suffix(" base"), on=at)
    d["decode speedup"] = d["decode tok/s"] / d["decode tok/s base"]
    d["prefill speedup"] = d["prefill tok/s"] / d["prefill tok/s base"]
    d = d.drop(columns=["decode tok/s base", "prefill tok/s base"])
    d = pd.concat([x for x in (d, points) if not x.empty], ignore_index=True)
    return d.sort_values(["model", "gpu", "method", "scheme", "batch"]).reset_index(drop=True)


def _points_rows(records: list[dict]) -> pd.DataFrame:
    """Decode points of multi-batch throughput records, in batch_frame's columns."""
    from harness.speedup import points_frame, with_speedup

    t = with_speedup(points_frame(records))
    if t.empty:
        return t
    t = t[t["kind"] == "decode"].rename(columns={"prompt": "prompt_len", "gen": "gen_len", "decode x": "decode speedup",
                                                  "prefill x": "prefill speedup"})
    # The scheme names what else set the point apart: speed-only quantization, a setup other than CUDA-graph decode.
    extra = [", ".join(x for x in (("speed_only" if so else ""), ("" if su == "cuda_graph" else su)) if x) or "-"
             for so, su in zip(t["speed_only"], t["setup"])]
    return t.assign(scheme=extra)[
        ["model", "gpu", "method", "scheme", "batch", "prompt_len", "gen_len", "prefill tok/s", "decode tok/s",
         "decode speedup", "prefill speedup"]]


def batch_figures(batches: pd.DataFrame) -> tuple[list, list[str]]:
    """Decode speedup vs batch size per (model, GPU); skipped, with a note, where one batch size was measured."""
    figs, notes = [], []
    if batches.empty:
        return figs, ["Speedup vs batch size: no throughput records."]
    for (model, gpu), g in batches.groupby(["model", "gpu"]):
        sizes = sorted(g["batch"].dropna().unique())
        if len(sizes) < 2:
            measured = ", ".join(map(str, sizes))
            notes.append(f"Speedup vs batch size: {model} on {gpu} has one batch size only ({measured}); "
                         "sweep it with bench.throughput.batch_size=1,4,16,64.")
            continue
        g = g.dropna(subset=["decode speedup"])
        if g.empty:
            notes.append(f"Speedup vs batch size: {model} on {gpu} has no method=none throughput to compare with.")
            continue
        fig = Figure(figsize=(7.5, 4.5), layout="constrained")
        ax = fig.add_subplot()
        for (method, scheme), m in g.groupby(["method", "scheme"]):
            ax.plot(m["batch"], m["decode speedup"], "o-", label=label(method, scheme))
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set(xlabel="batch size", ylabel="decode speedup vs unquantized", title=f"{model} on {gpu}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        figs.append((slug("batch-speedup", model, gpu), f"Speedup vs batch size: {model} on {gpu}", fig))
    return figs, notes


def kernel_frame(records: list[dict]) -> pd.DataFrame:
    """One row per (GPU, model, layer, backend, M) of the kind="kernels" records, newest measurement each, with
    the speedup vs cuBLAS bf16 on the same shape and M from the same record."""
    rows = []
    for r in records:
        if r.get("kind") != "kernels" or r.get("status") not in ("ok", "partial"):  # partial: the layers it finished
            continue
        gpu = (r.get("env") or {}).get("gpu") or "cpu"
        roof = (r.get("metrics") or {}).get("roofline") or {}
        for row in (r.get("metrics") or {}).get("rows", []):
            if row.get("status", "ok") == "ok":
                row = row | {"gpu": gpu, "date": r["created_at"], "run_id": r["run_id"]}
                if roof and {"bytes", "flops", "median_ms"} <= row.keys():  # each backend against its own rate
                    rate = row.get("matrix_rate") or matrix_rate_of(row["backend"])
                    row["roofline_fraction"] = roofline_fraction(row["bytes"], row["flops"], row["median_ms"],
                                                                 roof, rate)
                rows.append(row)
    if not rows:
        return pd.DataFrame()
    k = pd.DataFrame(rows)
    base = k[k["backend"] == KERNEL_BASELINE].set_index(["run_id", "model", "layer", "M"])
    base_ms = base["median_ms"]
    if "min_ms" in base.columns:  # older records lack it
        base_ms = base_ms.where(~(base["median_ms"] > BASELINE_MAX_SPREAD * base["min_ms"]))
    k = k.join(base_ms.rename("base_ms"), on=["run_id", "model", "layer", "M"])
    k["speedup"] = k["base_ms"] / k["median_ms"]
    k = k.sort_values("date").groupby(["gpu", "model", "layer", "backend", "M"]).tail(1)
    return k.drop(columns=["base_ms"]).sort_values(["gpu", "model", "layer", "backend", "M"]).reset_index(drop=True)


def kernel_figures(kernels: pd.DataFrame) -> tuple[list, list[str]]:
    """Per (GPU, model): for each layer shape, speedup vs cuBLAS bf16 (top) and roofline fraction (bottom) vs M."""
    if kernels.empty:
        return [], ["Kernels: no kind=\"kernels\" records (python -m harness.metrics.kernels on a GPU makes them)."]
    figs = []
    for (gpu, model), g in kernels.groupby(["gpu", "model"]):
        layers = list(dict.fromkeys(g["layer"]))
        # one style per backend in every panel (a panel may lack a backend: layers a partial run did not reach)
        styles = {b: {"color": f"C{i % 10}", "ls": "-" if i < 10 else "--"}
                  for i, b in enumerate(sorted(g["backend"].unique()))}
        fig = Figure(figsize=(3.4 * len(layers), 6.4), layout="constrained")
        axes = fig.subplots(2, len(layers), squeeze=False, sharex=True)
        for j, layer in enumerate(layers):
            s = g[g["layer"] == layer]
            k_, n_ = int(s["K"].iloc[0]), int(s["N"].iloc[0])
            for i, (col, ylabel) in enumerate((("speedup", f"speedup vs {KERNEL_BASELINE}"),
                                               ("roofline_fraction", "fraction of measured roofline"))):
                ax = axes[i][j]
                for backend, b in s.groupby("backend"):
                    ax.plot(b["M"], b[col], marker=".", label=backend, **styles[backend])
                ax.set_xscale("log", base=2)
                ax.grid(alpha=0.3)
                if i == 0:
                    ax.axhline(1.0, color="k", lw=0.8)
                    ax.set_title(f"{layer} (K={k_}, N={n_})", fontsize=9)
                else:
                    ax.set_xlabel("M (tokens)")
                if j == 0:
                    ax.set_ylabel(ylabel, fontsize=8)
        labels = {}
        for ax in axes[0]:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                labels.setdefault(lab, h)
        fig.legend([labels[b] for b in styles if b in labels], [b for b in styles if b in labels],
                   loc="outside lower center", ncols=4, fontsize=7)
        fig.suptitle(f"{model} linear layers on {gpu}")
        figs.append((slug("kernels", gpu, model), f"Kernels: {model} on {gpu}", fig))
    return figs, []
