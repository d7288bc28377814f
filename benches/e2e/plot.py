#!/usr/bin/python3
"""PNG plots from the CSV files bench.py writes (benches/results/):

  throughput.png   median req/s per contender and table size (bars: min..max over rounds),
                   one panel per upstream-connection group and host distribution
  capacity.png     the same for requests per CPU-second of the proxy (1 / CPU per request)
  propagation.png  distribution (CDF) of write ack → every worker routes the new backend
"""

import csv
import os
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.environ.get("BENCH_RESULTS", os.path.join(HERE, "..", "results"))

LABELS = {
    "floor": "fixed proxy_pass (no routing)",
    "map": "nginx map",
    "lua": "lua_shared_dict",
    "set-backend": "set-backend",
    "haproxy-close": "HAProxy map (server-close)",
    "map-1.28": "nginx map, 1.28",
    "set-backend-1.28": "set-backend, 1.28 (shipped)",
    "keepalive": "static upstream + keepalive (no routing)",
    "map-upstream": "map → upstream{} + keepalive",
    "haproxy": "HAProxy map (keep-alive)",
    "set-backend-peer": "set-backend upstream mode",
    "set-backend-peer-1.28": "set-backend upstream mode, 1.28",
    "map-reload": "nginx map + reload",
}
COLORS = {
    "floor": "#bbbbbb", "keepalive": "#bbbbbb",
    "map": "#4c72b0", "map-upstream": "#4c72b0", "map-1.28": "#8fa8d6",
    "lua": "#55a868",
    "haproxy-close": "#c44e52", "haproxy": "#c44e52",
    "set-backend": "#dd8452", "set-backend-peer": "#dd8452",
    "set-backend-1.28": "#f0b27a", "set-backend-peer-1.28": "#f0b27a",
    "map-reload": "#4c72b0",
}


def read(name):
    p = os.path.join(RESULTS, name)
    if not os.path.exists(p):
        return None
    with open(p) as f:
        return list(csv.DictReader(f))


def size_label(n):
    n = int(n)
    return f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1000}k"


def throughput(metric="rps"):
    """metric "rps": wall-clock req/s; "capacity": requests per CPU-second of the front server
    (10^6 / its CPU µs per request), which other load on the machine moves far less."""
    rows = read("throughput.csv")
    if not rows:
        return
    dists = sorted({r["dist"] for r in rows}, key=lambda d: d != "uniform")
    groups = [g for g in ("close", "keepalive") if any(r["group"] == g for r in rows)]
    sizes = sorted({int(r["hosts"]) for r in rows})
    fig, axes = plt.subplots(len(groups), len(dists), figsize=(6.2 * len(dists), 3.6 * len(groups)),
                             squeeze=False)
    for gi, g in enumerate(groups):
        names = []
        for r in rows:
            if r["group"] == g and r["contender"] not in names:
                names.append(r["contender"])
        for di, d in enumerate(dists):
            ax = axes[gi][di]
            width = 0.8 / max(1, len(names))
            for ci, c in enumerate(names):
                med, lo, hi, xs = [], [], [], []
                for si, n in enumerate(sizes):
                    v = [float(r["rps"]) if metric == "rps" else 1e6 / float(r["cpu_us_per_req"])
                         for r in rows
                         if r["contender"] == c and r["dist"] == d and int(r["hosts"]) == n]
                    if not v:
                        continue
                    m = statistics.median(v)
                    xs.append(si + (ci - (len(names) - 1) / 2) * width)
                    med.append(m)
                    lo.append(m - min(v))
                    hi.append(max(v) - m)
                ax.bar(xs, med, width, yerr=[lo, hi], capsize=2, label=LABELS.get(c, c),
                       color=COLORS.get(c), edgecolor="black", linewidth=0.4,
                       hatch="//" if c.endswith("1.28") else None)
            ax.set_xticks(range(len(sizes)))
            ax.set_xticklabels([size_label(n) + " hosts" for n in sizes])
            ax.set_ylabel("requests/s (median of rounds)" if metric == "rps"
                          else "requests per CPU-second\nof the proxy (median)")
            title = ("one upstream connection per request" if g == "close"
                     else "upstream keep-alive")
            ax.set_title(f"{title}, {d} hosts", fontsize=10)
            ax.grid(axis="y", alpha=0.3)
            if di == len(dists) - 1:
                ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    out = os.path.join(RESULTS, "throughput.png" if metric == "rps" else "capacity.png")
    fig.savefig(out, dpi=90)
    print(out)


def propagation():
    rows = read("propagation.csv")
    if not rows:
        return
    names = []
    for r in rows:
        if r["contender"] not in names:
            names.append(r["contender"])
    fig, ax = plt.subplots(figsize=(8, 4))
    for c in names:
        v = sorted(float(r["visible_ms"]) for r in rows if r["contender"] == c)
        y = [(i + 1) / len(v) for i in range(len(v))]
        ax.step(v, y, where="post", label=f"{LABELS.get(c, c)} (n={len(v)})",
                color=COLORS.get(c), linestyle="--" if c == "map-reload" else "-")
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=0.6, linestyle=":")
    ax.text(1.05, 0.02, "1 ms", fontsize=8)
    ax.set_xlabel("write acknowledged → every worker routes the new backend (ms, log)")
    ax.set_ylabel("fraction of updates")
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    out = os.path.join(RESULTS, "propagation.png")
    fig.savefig(out, dpi=90)
    print(out)


def main():
    throughput()
    throughput("capacity")
    propagation()
    return 0


if __name__ == "__main__":
    sys.exit(main())
