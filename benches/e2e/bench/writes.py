"""`writes`: write throughput through each contender's update API (set-backend's `POST` and
`PATCH`, the Lua dict's endpoint, HAProxy's runtime socket, nginx reloads)."""

import os
import random
import signal
import socket
import statistics
import time

from .config import RESULTS, TOKEN, UP_PORTS, WORKERS, host_name, log
from .procs import tree_pids
from .results import write_csv
from .stack import Stack
from .wrk import wrk


def cmd_writes(a):
    n = a.hosts
    out = []
    with Stack(n, ["lua", "haproxy", "set-backend", "map"]) as st:
        cs = {c.name: c for c in st.cs}
        w = st.writer
        ports = [str(p) for p in UP_PORTS]
        for conns in (1, 16):
            r = wrk(w.port, "writes.lua", ["set-backend", n, TOKEN, *ports], a.secs, conns)
            out.append(dict(contender="set-backend", api="POST /entries.json (durable)",
                            clients=conns, writes_per_s=round(r["rps"]), errors=r["errors"],
                            p50_ms=r["lat_p50_us"] / 1000, p99_ms=r["lat_p99_us"] / 1000))
            r = wrk(cs["lua"].api_port, "writes.lua", ["lua", n, "-", *ports], a.secs, conns)
            out.append(dict(contender="lua", api="GET /set (shared dict, not durable)",
                            clients=conns, writes_per_s=round(r["rps"]), errors=r["errors"],
                            p50_ms=r["lat_p50_us"] / 1000, p99_ms=r["lat_p99_us"] / 1000))
            log(out[-2], out[-1])
        # set-backend batches
        c = w.conn()
        rnd = random.Random(7)
        batches, size = 0, 1000
        t0 = time.monotonic()
        while time.monotonic() - t0 < a.secs:
            # distinct hosts: a batch naming a host twice is refused
            ups = [{"host": host_name(h), "backend": f"127.0.0.1:{rnd.choice(UP_PORTS)}"}
                   for h in rnd.sample(range(n), min(size, n))]
            w.patch(c, ups)
            batches += 1
        el = time.monotonic() - t0
        out.append(dict(contender="set-backend", api="PATCH /entries.json, 1000 per batch",
                        clients=1, writes_per_s=round(batches * min(size, n) / el), errors=0))
        log(out[-1])
        # HAProxy: one command per connection, and 100 commands per line on one connection
        hap = cs["haproxy"]
        for per in (1, 100):
            t0 = time.monotonic()
            done = 0
            while time.monotonic() - t0 < a.secs:
                cmds = "; ".join(
                    f"set map {hap.map_file} {host_name(rnd.randrange(n))} {rnd.randrange(4)}"
                    for _ in range(per))
                s = socket.socket(socket.AF_UNIX)
                s.connect(hap.sock)
                s.sendall((cmds + "\n").encode())
                while s.recv(65536):
                    pass
                s.close()
                done += per
            el = time.monotonic() - t0
            out.append(dict(contender="haproxy",
                            api=f"runtime API set map, {per} per connection",
                            clients=1, writes_per_s=round(done / el), errors=0))
            log(out[-1])
        # nginx map: one reload per change (any number of changes per reload)
        m = cs["map"]
        times = []
        for i in range(a.reload_count):
            # same map, so wait for the new generation of workers instead of a new answer
            before = set(tree_pids(m.proc.p.pid))
            t0 = time.perf_counter()
            os.kill(m.proc.p.pid, signal.SIGHUP)
            while True:
                now = set(tree_pids(m.proc.p.pid))
                if len(now - before) >= WORKERS or time.perf_counter() - t0 > 10:
                    break
                time.sleep(0.001)
            times.append(time.perf_counter() - t0)
            time.sleep(0.2)
        out.append(dict(contender="map-reload", api="nginx -s reload (whole map)",
                        clients=1, writes_per_s=round(1 / statistics.median(times), 1), errors=0,
                        p50_ms=round(statistics.median(times) * 1000, 1)))
        log(out[-1])
    write_csv(os.path.join(RESULTS, "writes.csv"), out)
