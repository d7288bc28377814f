"""`report`: benches/results/report.md, the markdown tables of every run, from the result
files (the full tables behind BENCHMARKS.md and benches/results/HISTORY.md)."""

import json
import os
import statistics

from .config import RESULTS
from .contenders import lineup
from .results import pct, read_csv


def report_throughput(p, tag):
    """The throughput tables and ratios of one run (tag "": throughput.csv; else throughput-TAG.csv)."""
    sfx = f"-{tag}" if tag else ""
    ts = os.path.join(RESULTS, f"throughput-summary{sfx}.csv")
    if os.path.exists(ts):
        rows = read_csv(ts)
        order = [c.name for c in lineup()]
        for (n, dist) in sorted({(int(r["hosts"]), r["dist"]) for r in rows},
                                key=lambda k: (k[0], k[1] != "uniform")):
            rs = sorted([r for r in rows if int(r["hosts"]) == n and r["dist"] == dist],
                        key=lambda r: order.index(r["contender"]) if r["contender"] in order else 99)
            load = statistics.median(float(r["load1_median"]) for r in rs)
            conns = any(r.get("req_per_upstream_conn") not in ("", None) for r in rs)
            p(f"#### {n:,} hosts, {dist} ({rs[0]['rounds']} rounds, load average ≈ {load:.0f})"
              + (f" — run `{tag}`" if tag else ""))
            p("")
            p("| contender | req/s median [min–max] | p99 ms | nginx/HAProxy CPU µs/req | "
              "req/s ÷ map | req/s ÷ lua | capacity ÷ map | capacity ÷ lua | errors |"
              + (" capacity ÷ lua-balancer | requests per upstream connection |" if conns else ""))
            p("| --- | --- | --- | --- | --- | --- | --- | --- | --- |" + (" --- | --- |" if conns else ""))
            for r in rs:
                f = lambda k: "" if r.get(k) in ("", None) else r[k]  # noqa: E731
                p(f"| {r['contender']} | {int(float(r['rps_median'])):,} "
                  f"[{int(float(r['rps_min'])):,}–{int(float(r['rps_max'])):,}] | "
                  f"{float(r['p99_ms_median']):.1f} | {f('cpu_us_median')} | {f('vs_map')} | "
                  f"{f('vs_lua')} | {f('cpu_vs_map')} | {f('cpu_vs_lua')} | {r['errors']} |"
                  + (f" {f('cpu_vs_lua_balancer')} | {f('req_per_upstream_conn')} |" if conns else ""))
            p("")
    if os.path.exists(ts):
        # the goals, as ratios taken round by round in the same run (req/s: a ÷ b; capacity:
        # b's CPU per request ÷ a's, so > 1 means a needs less CPU per request)
        raw = read_csv(os.path.join(RESULTS, f"throughput{sfx}.csv"))
        pairs = [("set-backend", "map"), ("set-backend", "lua"), ("set-backend-1.28", "map-1.28"),
                 ("set-backend-peer", "map-upstream"), ("set-backend-peer", "haproxy"),
                 ("set-backend-peer", "map"), ("set-backend-peer-1.28", "map-upstream"),
                 ("set-backend-peer", "lua-balancer"), ("lua-balancer", "map-upstream"),
                 ("lua-balancer", "lua"), ("set-backend-peer", "keepalive"),
                 ("keepalive", "lua-balancer"),
                 ("set-backend-peer-tls", "haproxy-tls"), ("set-backend-peer-tls", "keepalive-tls"),
                 ("set-backend-peer-2set", "keepalive-2")]
        p("#### Ratios (median over rounds of the ratio within each round)"
          + (f" — run `{tag}`" if tag else ""))
        p("")
        p("| a ÷ b | hosts | distribution | req/s ratio | capacity ratio (CPU/req of b ÷ of a) |")
        p("| --- | --- | --- | --- | --- |")
        for a_, b_ in pairs:
            for (n, dist) in sorted({(int(r["hosts"]), r["dist"]) for r in raw},
                                    key=lambda k: (k[0], k[1] != "uniform")):
                ra, rc = [], []
                for rnd in {r["round"] for r in raw}:
                    x = [r for r in raw if int(r["hosts"]) == n and r["dist"] == dist
                         and r["round"] == rnd]
                    xa = [r for r in x if r["contender"] == a_]
                    xb = [r for r in x if r["contender"] == b_]
                    if xa and xb:
                        ra.append(float(xa[0]["rps"]) / float(xb[0]["rps"]))
                        rc.append(float(xb[0]["cpu_us_per_req"]) / float(xa[0]["cpu_us_per_req"]))
                if ra:
                    p(f"| {a_} ÷ {b_} | {n:,} | {dist} | {statistics.median(ra):.3f} | "
                      f"{statistics.median(rc):.3f} |")
        p("")


def cmd_report(a):
    """Markdown tables from the result files (benches/results/report.md), for BENCHMARKS.md."""
    out = []
    p = lambda *x: out.append(" ".join(str(v) for v in x))  # noqa: E731
    mj = os.path.join(RESULTS, "machine.json")
    if os.path.exists(mj):
        m = json.load(open(mj))
        p(f"Machine: {m['cpu']}, {m['cores']} cores, {m['mem_mib'] // 1024} GiB, Linux "
          f"{m['kernel']}; {m['nginx_debian']}; {m['haproxy']}; {m['wrk']}; commit {m['commit']}.")
        p("")
    tags = [""] + sorted(f[len("throughput-summary-"):-4] for f in os.listdir(RESULTS)
                         if f.startswith("throughput-summary-") and f.endswith(".csv"))
    for tag in tags:
        report_throughput(p, tag)
    for pj in sorted((os.path.join(RESULTS, f) for f in os.listdir(RESULTS)
                      if f.startswith("propagation-summary")), key=len):
        d = json.load(open(pj))
        p(f"#### Propagation ({d['hosts']:,} hosts)")
        p("")
        sfx = "" if d["hosts"] == 1000 else f"-{d['hosts']}"
        prow = read_csv(os.path.join(RESULTS, f"propagation{sfx}.csv"))
        p("| contender | updates | ack → all workers p50 ms | p99 ms | max ms | "
          "stale answers after ack | probe RTT p50 / p99 ms | write ack p50 / p99 ms | "
          "request sent → routed p50 / p99 ms |")
        p("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for s_ in d["summary"]:
            g = lambda k: s_.get(k, "")  # noqa: E731
            tot = [float(r["write_ms"] or 0) + float(r["visible_ms"]) for r in prow
                   if r["contender"] == s_["contender"]]
            tt = f"{pct(tot, 0.5):.3f} / {pct(tot, 0.99):.3f}" if tot else ""
            p(f"| {s_['contender']} | {s_['updates']} (failed {s_['failures']}) | {s_['p50_ms']} | "
              f"{s_['p99_ms']} | {s_['max_ms']} | {g('stale_answers')} | "
              f"{g('probe_rtt_p50_ms')} / {g('probe_rtt_p99_ms')} | "
              f"{g('write_p50_ms')} / {g('write_p99_ms')} | {tt} |")
        p("")
        u = d.get("reload_under_load", {})
        if u:
            p("| nginx map under wrk load | reloads | req/s | requests | failed | p50 ms | p99 ms | p99.9 ms | max ms |")
            p("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
            for k, v in u.items():
                p(f"| {k} | {v['reloads']} | {v['rps']:,} | {v['requests']:,} | {v['errors']} "
                  f"({100 * v['errors'] / max(1, v['requests']):.2f}%) | {v['p50_ms']} | "
                  f"{v['p99_ms']} | {v['p999_ms']} | {v['max_ms']} |")
            p("")
    wc = os.path.join(RESULTS, "writes.csv")
    if os.path.exists(wc):
        p("#### Write throughput")
        p("")
        p("| contender | API | clients | writes/s | p50 ms | p99 ms |")
        p("| --- | --- | --- | --- | --- | --- |")
        for r in read_csv(wc):
            p(f"| {r['contender']} | {r['api']} | {r['clients']} | {r['writes_per_s']} | "
              f"{r.get('p50_ms', '')} | {r.get('p99_ms', '')} |")
        p("")
    for f in sorted(os.listdir(RESULTS)):
        if f.startswith("memory-") and f.endswith(".csv"):
            rows = read_csv(os.path.join(RESULTS, f))
            p(f"#### Memory and start, {int(rows[0]['hosts']):,} hosts")
            p("")
            p("| contender | ready after start (s) | PSS of all its processes (MiB) | other |")
            p("| --- | --- | --- | --- |")
            for r in rows:
                other = ""
                if r.get("table_bytes"):
                    other = (f"table file {int(r['table_bytes']) / 2**20:.0f} MiB; import through "
                             f"the API {float(r['import_s']):.1f} s")
                p(f"| {r['contender']} | {r['ready_s']} | {int(r['pss_kib']) / 1024:.0f} | {other} |")
            p("")
    text = "\n".join(out)
    with open(os.path.join(RESULTS, "report.md"), "w") as fh:
        fh.write(text + "\n")
    print(text)
