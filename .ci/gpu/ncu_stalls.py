"""Warp-stall samples of one kernel from Nsight Compute's per-SASS-line export (thirteenth session), on the CPU:

    ncu -i REPORT.ncu-rep --page source --csv --print-source sass > lines.csv
    python3 .ci/gpu/ncu_stalls.py lines.csv [FIRST-LAST ...] [--top N]

prints the samples by stall reason over the kernel, the N lines with the most samples (default 40), and for each
FIRST-LAST range of line numbers (e.g. a consumer's K loop) the samples by opcode group."""

import argparse
import csv
import re


def _num(s: str) -> int:
    s = s.replace(",", "")
    return int(s) if s.isdigit() else 0


def load(path: str) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(open(path)))
    return rows[1], rows[2:]  # row 0 names the kernel


def group(ins: str, prev: str) -> str:
    """An instruction's opcode group: HGMMA, LDS, LDG, the mbarrier arrive and try-wait (with its branch), else the
    opcode's first part."""
    op = re.sub(r"^@!?U?P\w+\s+", "", ins).split()[0]
    if op.startswith(("HGMMA", "LDS", "LDG")):
        return op.split(".")[0]
    if "ARRIVE.TRANS" in op:
        return "SYNCS.ARRIVE"
    if "TRYWAIT" in op or (op == "BRA" and "TRYWAIT" in prev):
        return "TRYWAIT+BRA"
    return op.split(".")[0]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv")
    ap.add_argument("ranges", nargs="*", help="FIRST-LAST line numbers (0-based, as printed)")
    ap.add_argument("--top", type=int, default=40)
    args = ap.parse_args(argv)
    hdr, data = load(args.csv)
    col = hdr.index("Warp Stall Sampling (All Samples)")
    reasons = [i for i, h in enumerate(hdr) if h.startswith("stall_") and "Not Issued" not in h]
    total = sum(_num(r[col]) for r in data)
    print(f"{total} samples over {len(data)} SASS lines")
    by_reason = {hdr[i]: sum(_num(r[i]) for r in data) for i in reasons}
    for name, v in sorted(by_reason.items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {name:26s} {v:8d} {100 * v / max(total, 1):5.1f}%")
    print(f"\nthe {args.top} lines with the most samples:")
    for j in sorted(sorted(range(len(data)), key=lambda j: -_num(data[j][col]))[:args.top]):
        r = data[j]
        top = sorted(((hdr[i][6:], _num(r[i])) for i in reasons if _num(r[i])), key=lambda kv: -kv[1])[:3]
        print(f"  {j:5d} {_num(r[col]):6d} {r[1].strip()[:64]:64s} {top}")
    for rng in args.ranges:
        a, b = (int(v) for v in rng.split("-"))
        g: dict[str, int] = {}
        for j in range(a, b + 1):
            key = group(data[j][1].strip(), data[j - 1][1] if j else "")
            g[key] = g.get(key, 0) + _num(data[j][col])
        n = sum(g.values())
        print(f"\nlines {a}-{b}: {n} samples")
        for k, v in sorted(g.items(), key=lambda kv: -kv[1])[:14]:
            print(f"  {k:14s} {v:7d} {100 * v / max(n, 1):5.1f}%")


if __name__ == "__main__":
    main()
