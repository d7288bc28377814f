"""`throughput`: wrk against every contender in rounds (A B C, then B C A, …: each round starts
one further on), for each table size, each round running every distribution; the proxy's CPU time per request; each
contender's start time and memory. `--https`: the HTTPS fronts, over https:// with keep-alive."""

import datetime
import os
import statistics

from .config import RESULTS, loadavg, log
from .procs import cpu_ns, tree_pids
from .results import read_csv, write_csv
from .stack import Stack
from .wrk import run_wrk


def cmd_throughput(a):
    sizes = [int(s) for s in a.sizes.split(",")]
    dists = a.dists.split(",")
    names = a.contenders.split(",")
    os.makedirs(RESULTS, exist_ok=True)
    tag = f"-{a.tag}" if a.tag else ""
    out_csv = os.path.join(RESULTS, f"throughput{tag}.csv")
    start_csv = os.path.join(RESULTS, f"startup{tag}.csv")
    # rerunning some sizes replaces their rows and keeps the others'
    rows = [r for r in (read_csv(out_csv) if os.path.exists(out_csv) else [])
            if int(r["hosts"]) not in sizes]
    srows = [r for r in (read_csv(start_csv) if os.path.exists(start_csv) else [])
             if int(r["hosts"]) not in sizes]
    for n in sizes:
        skip = [x for x in names if n > 100_000 and x in a.skip_1m.split(",")]
        with Stack(n, [x for x in names if x not in skip]) as st:
            for c in st.cs:
                srows.append(dict(hosts=n, contender=c.name, ready_s=round(c.ready_s, 3),
                                  pss_kib_start=c.memory_kib()))
            order = [c for c in st.cs if c.measured]
            # every round runs each distribution in turn, so that no distribution always
            # lands in the later, busier half of a run
            for rnd in range(a.rounds):
                for dist in dists:
                    # A B C, then B C A, …: no contender always runs first or last
                    k = rnd % len(order)
                    for c in order[k:] + order[:k]:
                        scheme = "https" if c.tls else "http"
                        run_wrk(c.target_port, n, dist, a.warmup, a.conns, scheme=scheme)
                        la = loadavg()
                        pids = tree_pids(c.proc.p.pid)
                        up0 = st.up.stats()
                        cpu0 = cpu_ns(pids)
                        r = run_wrk(c.target_port, n, dist, a.secs, a.conns, scheme=scheme)
                        cpu = (cpu_ns(pids) - cpu0) / 1000 / max(1, r["requests"])
                        up1 = st.up.stats()
                        # new upstream connections and upstream requests during the run (the
                        # warm-up run before has already opened what a keep-alive pool keeps)
                        uconns, ureqs = up1[0] - up0[0] - 1, up1[1] - up0[1] - 1
                        row = dict(hosts=n, dist=dist, round=rnd, contender=c.name,
                                   group=c.group, rps=round(r["rps"], 1),
                                   cpu_us_per_req=round(cpu, 2),
                                   p50_ms=r["lat_p50_us"] / 1000, p99_ms=r["lat_p99_us"] / 1000,
                                   errors=r["errors"], requests=r["requests"], load1=la,
                                   upstream_conns=uconns, upstream_requests=ureqs,
                                   req_per_upstream_conn=round(r["requests"] / uconns, 1)
                                   if uconns > 0 else "inf",
                                   time=datetime.datetime.utcnow().isoformat(timespec="seconds"))
                        rows.append(row)
                        log(f"{n:>8} {dist:8} r{rnd} {c.name:18} {r['rps']:9.0f} req/s {cpu:6.1f} µs cpu/req "
                            f"p99 {r['lat_p99_us'] / 1000:6.2f} ms err {r['errors']} load {la:.1f} "
                            f"upstream conns {uconns} req/conn {row['req_per_upstream_conn']}")
                    write_csv(out_csv, rows)
            for c in st.cs:
                for s in srows:
                    if s["hosts"] == n and s["contender"] == c.name:
                        s["pss_kib_after"] = c.memory_kib()
            if st.writer:
                info = st.info["set-backend"]
                srows.append(dict(hosts=n, contender="writer", ready_s=round(info["writer_start_s"], 3),
                                  pss_kib_start=info["writer_pss_kib"],
                                  pss_kib_after=st.writer.rss_kib(),
                                  table_bytes=info["table_bytes"],
                                  import_s=round(info["import_s"], 3)))
            write_csv(start_csv, srows)
    write_csv(out_csv, rows)
    summarize_throughput(out_csv, tag)


def req_per_conn(rows):
    """All the rounds' requests ÷ all the new upstream connections they made ("" when the runs
    did not count them; "inf" when every request went over a connection opened before)."""
    rows = [r for r in rows if r.get("upstream_conns") not in (None, "")]
    if not rows:
        return ""
    conns = sum(int(r["upstream_conns"]) for r in rows)
    reqs = sum(int(r["requests"]) for r in rows)
    return round(reqs / conns, 1) if conns > 0 else "inf"


def summarize_throughput(path, tag=""):
    """Medians per contender; ratios taken round by round (same minute), then their median."""
    rows = read_csv(path)
    keyed = {}
    for r in rows:
        keyed.setdefault((int(r["hosts"]), r["dist"]), []).append(r)
    summary = []
    for (n, dist), rs in sorted(keyed.items()):
        by = {}
        for r in rs:
            by.setdefault(r["contender"], {})[int(r["round"])] = r

        def ratio(a, b, key="rps"):
            """median over rounds of a/b; for CPU per request b/a (so > 1 = a is better)"""
            if a not in by or b not in by:
                return None
            rr = []
            for k in by[a]:
                if k in by[b]:
                    x, y = float(by[a][k][key]), float(by[b][k][key])
                    if x > 0 and y > 0:
                        rr.append(x / y if key == "rps" else y / x)
            return round(statistics.median(rr), 3) if rr else None

        for name, rounds in by.items():
            v = [float(x["rps"]) for x in rounds.values()]
            summary.append(dict(
                hosts=n, dist=dist, contender=name, rounds=len(v),
                rps_median=round(statistics.median(v)), rps_min=round(min(v)), rps_max=round(max(v)),
                p50_ms_median=round(statistics.median(float(x["p50_ms"]) for x in rounds.values()), 3),
                p99_ms_median=round(statistics.median(float(x["p99_ms"]) for x in rounds.values()), 3),
                errors=sum(int(x["errors"]) for x in rounds.values()),
                cpu_us_median=round(statistics.median(float(x["cpu_us_per_req"]) for x in rounds.values()), 2),
                cpu_vs_map=ratio(name, "map", "cpu_us_per_req"),
                cpu_vs_lua=ratio(name, "lua", "cpu_us_per_req"),
                cpu_vs_map_128=ratio(name, "map-1.28", "cpu_us_per_req"),
                cpu_vs_map_upstream=ratio(name, "map-upstream", "cpu_us_per_req"),
                cpu_vs_haproxy=ratio(name, "haproxy", "cpu_us_per_req"),
                cpu_vs_lua_balancer=ratio(name, "lua-balancer", "cpu_us_per_req"),
                vs_lua_balancer=ratio(name, "lua-balancer"),
                req_per_upstream_conn=req_per_conn(rounds.values()),
                vs_map=ratio(name, "map"), vs_lua=ratio(name, "lua"), vs_floor=ratio(name, "floor"),
                vs_map_128=ratio(name, "map-1.28"), vs_keepalive=ratio(name, "keepalive"),
                vs_haproxy=ratio(name, "haproxy"),
                vs_keepalive_tls=ratio(name, "keepalive-tls"),
                vs_haproxy_tls=ratio(name, "haproxy-tls"),
                cpu_vs_keepalive_tls=ratio(name, "keepalive-tls", "cpu_us_per_req"),
                cpu_vs_haproxy_tls=ratio(name, "haproxy-tls", "cpu_us_per_req"),
                vs_keepalive_2=ratio(name, "keepalive-2"),
                cpu_vs_keepalive_2=ratio(name, "keepalive-2", "cpu_us_per_req"),
                load1_median=round(statistics.median(float(x["load1"]) for x in rounds.values()), 2),
            ))
    write_csv(os.path.join(RESULTS, f"throughput-summary{tag}.csv"), summary)
    for s in summary:
        print(f"{s['hosts']:>8} {s['dist']:8} {s['contender']:18} {s['rps_median']:>8} "
              f"[{s['rps_min']}..{s['rps_max']}] p99 {s['p99_ms_median']:.2f} ms "
              f"vs map {s['vs_map']} vs lua {s['vs_lua']} | cpu {s['cpu_us_median']} µs/req "
              f"capacity vs map {s['cpu_vs_map']} vs lua {s['cpu_vs_lua']}")
