#!/usr/bin/python3
"""End-to-end benchmarks of set-backend against what an nginx operator would otherwise pick.

Layout:
  conf/          one configuration template per contender (nginx, HAProxy) and the upstream
  wrk/hosts.lua  wrk script spreading requests over many hosts (uniform or zipf)
  wrk/writes.lua wrk script for the write-throughput runs
  build.sh       release builds: writer, module + nginx 1.28.3, module for Debian's nginx 1.22
  deps.sh        the Debian packages (installed as root, else listed)
  plot.py        PNG plots from the CSV files this script writes

Subcommands (each runs alone; `make bench-e2e` runs them all, see the Makefile):
  throughput   wrk against every contender, in rounds (A B C …, A B C …), for each table size
               and distribution; also records each contender's start time and memory
  propagation  ack → every worker routes the new backend, per update API; reload under load
  writes       write throughput through each update API
  memory       memory and start time with 1M hosts (subset of throughput, no wrk)
  machine      benches/results/machine.json (CPU, kernel, versions, load, commit)
  report       benches/results/report.md: the markdown tables of BENCHMARKS.md

Two measures of throughput: wrk's req/s (wall clock, moved by anything else on the machine)
and the proxy's CPU time per request (schedstat of all its threads), whose inverse is the
capacity when the proxy owns the CPU. Ratios are taken within a round, then their median.

Everything listens on 127.0.0.1 only; every run is bounded in time; nginx is stopped with QUIT
(TERM after a timeout), never KILL. Results go to benches/results/*.csv|json.
"""

import argparse
import csv
import datetime
import http.client
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import string
import subprocess
import sys
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
TARGET = os.environ.get("BENCH_TARGET", os.path.join(ROOT, "target-bench"))
RESULTS = os.environ.get("BENCH_RESULTS", os.path.join(ROOT, "benches", "results"))
RUN = os.path.join(TARGET, "e2e")
DEBIAN_NGINX = os.environ.get("DEBIAN_NGINX", "/usr/sbin/nginx")
HAPROXY = os.environ.get("HAPROXY", shutil.which("haproxy") or "/usr/sbin/haproxy")
WRK = os.environ.get("WRK", shutil.which("wrk") or "/usr/bin/wrk")
TOKEN = "bench-token-0123456789abcdef0123"
BASE_PORT = int(os.environ.get("BENCH_BASE_PORT", "18000"))
UP_PORTS = [BASE_PORT + 1 + i for i in range(4)]
STATUS_PORT = BASE_PORT + 5  # the upstream's stub_status (connections accepted, requests)
WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


def host_name(i):
    return f"site{i}.bench.example"


def backend_port(i):
    return UP_PORTS[i % 4]


def loadavg():
    return os.getloadavg()[0]


# ---------------------------------------------------------------------------------------------
# builds


def vendored_nginx():
    import glob

    c = sorted(
        glob.glob(os.path.join(TARGET, "release/build/nginx-sys-*/out/objs/nginx")),
        key=os.path.getmtime,
    )
    return c[-1] if c else None


def module_so(flavor):
    p = (
        os.path.join(TARGET, "release/libngx_http_set_backend_module.so")
        if flavor == "1.28"
        else os.path.join(TARGET, "debian-nginx/release/libngx_http_set_backend_module.so")
    )
    return p


def writer_bin():
    return os.path.join(TARGET, "release/set-backend")


def module_has_peer():
    """The upstream mode exists when the module source defines the set_backend_peer directive."""
    try:
        out = subprocess.run(
            ["grep", "-rqs", "set_backend_peer", os.path.join(ROOT, "module/src")]
        )
        return out.returncode == 0
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# data files


def prepare_data(n, tag=""):
    """hosts.txt (host backend), nginx map includes, the HAProxy map; for n hosts. A run that
    rewrites the files (the reload benchmark) uses its own copy, named by `tag`."""
    d = os.path.join(RUN, f"data-{n}{tag}")
    stamp = os.path.join(d, ".done")
    if os.path.exists(stamp):
        return d
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "hosts.txt"), "w") as ht, open(
        os.path.join(d, "nginx-map.conf"), "w"
    ) as nm, open(os.path.join(d, "nginx-map-upstream.conf"), "w") as nu, open(
        os.path.join(d, "haproxy.map"), "w"
    ) as hm:
        for i in range(n):
            h, p = host_name(i), backend_port(i)
            ht.write(f"{h} 127.0.0.1:{p}\n")
            nm.write(f"{h} 127.0.0.1:{p};\n")
            nu.write(f"{h} b{i % 4};\n")
            hm.write(f"{h} {i % 4}\n")
    open(stamp, "w").close()
    return d


def render(template, out, **kw):
    def sub(text, extra):
        return string.Template(text).safe_substitute({**kw, **extra})

    common = sub(open(os.path.join(HERE, "conf/common.inc")).read(), {})
    http = sub(open(os.path.join(HERE, "conf/http.inc")).read(), {})
    text = sub(open(os.path.join(HERE, "conf", template)).read(), {"common": common, "http": http})
    with open(out, "w") as f:
        f.write(text)


# ---------------------------------------------------------------------------------------------
# processes


def tree_pids(pid):
    pids = [pid]
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
        for c in out.split():
            pids += tree_pids(int(c))
    except OSError:
        pass
    return pids


def pss_kib(pid):
    """Sum of Pss (KiB) over a process and its descendants (shared pages split between them)."""
    total = 0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def cpu_ns(pids):
    """CPU time (ns, user + system) of every thread of these processes, from schedstat: finer
    than clock ticks, and unlike wall-clock throughput barely moved by other load."""
    total = 0
    for p in pids:
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                try:
                    with open(f"/proc/{p}/task/{t}/schedstat") as f:
                        total += int(f.read().split()[0])
                except OSError:
                    pass
        except OSError:
            pass
    return total


def http_get(port, host, path="/", timeout=2.0):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path, headers={"Host": host, "Connection": "close"})
        r = c.getresponse()
        return r.status, r.read().decode(errors="replace").strip()
    finally:
        c.close()


class Proc:
    """One server process (nginx master, HAProxy, the writer) run in the foreground."""

    def __init__(self, name, argv, prefix, env=None):
        self.name, self.argv, self.prefix, self.env = name, argv, prefix, env
        self.p = None

    def start(self):
        os.makedirs(self.prefix, exist_ok=True)
        self.out = open(os.path.join(self.prefix, "stderr.log"), "ab")
        env = dict(os.environ, **(self.env or {}))
        self.p = subprocess.Popen(self.argv, stdout=self.out, stderr=self.out, env=env)

    def alive(self):
        return self.p is not None and self.p.poll() is None

    def stop(self, sig=signal.SIGQUIT, timeout=20):
        if not self.alive():
            return
        self.p.send_signal(sig)
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.send_signal(signal.SIGTERM)
            self.p.wait(30)

    def tail(self):
        for f in ("stderr.log", "error.log"):
            p = os.path.join(self.prefix, f)
            if os.path.exists(p):
                with open(p, "rb") as fh:
                    data = fh.read()[-2000:].decode(errors="replace")
                if data.strip():
                    log(f"--- {self.name} {f}:\n{data}")


def user_line():
    return "user root root;" if os.geteuid() == 0 else ""


class Contender:
    """A front server under test: how to configure, start, probe and stop it."""

    def __init__(self, name, label, group, kind, template=None, binary=None, module=None,
                 port=None, note=""):
        self.name, self.label, self.group, self.kind = name, label, group, kind
        self.template, self.binary, self.module = template, binary, module
        self.port, self.note = port, note
        self.proc = None
        self.api_port = None  # lua update endpoint
        self.close_port = None  # HAProxy frontend without upstream keepalive
        self.target_port = port  # where wrk goes
        self.routed = name not in ("floor", "keepalive")  # the two fixed-destination baselines

    def prefix(self, n):
        return os.path.join(RUN, f"{self.name}-{n}")

    def start(self, n, data, table=None):
        prefix = self.prefix(n)
        if os.path.exists(prefix):
            shutil.rmtree(prefix)
        for sub in ("tmp/body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi"):
            os.makedirs(os.path.join(prefix, sub), exist_ok=True)
        kw = dict(
            prefix=prefix, data=data, workers=WORKERS, user_line=user_line(), port=self.port,
            up0=UP_PORTS[0], up1=UP_PORTS[1], up2=UP_PORTS[2], up3=UP_PORTS[3],
            map_hash_max_size=max(1024, 2 * n), lua_dict_size=f"{max(16, n * 400 // 1_000_000 + 16)}m",
            api_port=self.api_port, close_port=self.close_port, module=self.module, table=table,
        )
        if self.kind == "haproxy":
            cfg = os.path.join(prefix, "haproxy.cfg")
            render(self.template, cfg, **kw)
            self.map_file = os.path.join(data, "haproxy.map")
            self.sock = os.path.join(prefix, "admin.sock")
            self.proc = Proc(self.name, [self.binary, "-db", "-f", cfg], prefix)
        else:
            cfg = os.path.join(prefix, "nginx.conf")
            render(self.template, cfg, **kw)
            self.proc = Proc(
                self.name,
                [self.binary, "-p", prefix, "-c", cfg, "-e", os.path.join(prefix, "error.log")],
                prefix,
            )
        self.t0 = time.monotonic()
        self.proc.start()

    def wait_ready(self, sample, timeout=300):
        """Until a sample host answers with its backend's port; returns the seconds it took."""
        host, want = sample
        port = self.port
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.proc.alive():
                self.proc.tail()
                raise RuntimeError(f"{self.name} exited")
            try:
                st, body = http_get(port, host)
                if st == 200 and (body == str(want) or not self.routed):
                    return time.monotonic() - self.t0
            except OSError:
                pass
            time.sleep(0.02)
        self.proc.tail()
        raise RuntimeError(f"{self.name} not ready after {timeout}s")

    def check(self, n):
        """A few random hosts must reach their own backend (the routing is real)."""
        if not self.routed:
            return
        for i in random.sample(range(n), min(n, 20)):
            for port in {self.target_port, self.port}:
                try:
                    st, body = http_get(port, host_name(i), timeout=10.0)
                except OSError:  # a stalled machine: once more
                    st, body = http_get(port, host_name(i), timeout=30.0)
                if st != 200 or body != str(backend_port(i)):
                    raise RuntimeError(
                        f"{self.name}: {host_name(i)} → {st} {body!r}, want {backend_port(i)}"
                    )

    def memory_kib(self):
        return pss_kib(self.proc.p.pid) if self.proc and self.proc.alive() else 0

    def stop(self):
        if self.proc:
            # nginx: QUIT (graceful); HAProxy: USR1 (soft stop)
            self.proc.stop(signal.SIGUSR1 if self.kind == "haproxy" else signal.SIGQUIT)


def contenders():
    """Every contender, with its port. Groups: "close" = one upstream connection per request
    (what any variable proxy_pass does), "keepalive" = upstream connections reused."""
    deb, ven = DEBIAN_NGINX, vendored_nginx()
    cs = []
    port = BASE_PORT + 10

    def add(*a, **k):
        nonlocal port
        c = Contender(*a, port=port, **k)
        port += 1
        cs.append(c)
        return c

    add("floor", "fixed proxy_pass (1.22)", "close", "nginx", "floor.conf", deb)
    add("map", "nginx map (1.22)", "close", "nginx", "map.conf", deb)
    lua = add("lua", "lua_shared_dict (1.22)", "close", "nginx", "lua.conf", deb)
    lua.api_port = port
    port += 1
    add("set-backend", "set-backend (1.22)", "close", "nginx", "set-backend.conf", deb,
        module=module_so("1.22"))
    hap = add("haproxy", "HAProxy 2.6 map", "keepalive", "haproxy", "haproxy.cfg", HAPROXY)
    hap.close_port = port
    port += 1
    hc = Contender("haproxy-close", "HAProxy 2.6 map, server-close", "close", "alias",
                   port=hap.close_port)
    hc.alias = hap
    cs.append(hc)
    add("map-1.28", "nginx map (1.28)", "close", "nginx", "map.conf", ven)
    add("set-backend-1.28", "set-backend (1.28, shipped)", "close", "nginx",
        "set-backend.conf", ven, module=module_so("1.28"))
    add("keepalive", "static upstream + keepalive (1.22)", "keepalive", "nginx",
        "keepalive.conf", deb)
    add("map-upstream", "map → upstream{} + keepalive (1.22)", "keepalive", "nginx",
        "map-upstream.conf", deb)
    lb = add("lua-balancer", "balancer_by_lua + lua_shared_dict + keepalive (1.22)", "keepalive",
             "nginx", "lua-balancer.conf", deb)
    lb.api_port = port
    port += 1
    # upstream mode (set_backend_peer), when the module has it
    for c in (add("set-backend-peer", "set-backend upstream mode (1.22)", "keepalive", "nginx",
                  "set-backend-peer.conf", deb, module=module_so("1.22")),
              add("set-backend-peer-1.28", "set-backend upstream mode (1.28)", "keepalive",
                  "nginx", "set-backend-peer.conf", ven, module=module_so("1.28"))):
        c.enabled = module_has_peer()
    for c in cs:
        if not hasattr(c, "enabled"):
            c.enabled = True
        if c.kind != "alias" and not (c.binary and os.path.exists(c.binary)) or (
                c.module and not os.path.exists(c.module)):
            if c.enabled:
                log(f"{c.name}: left out, {c.binary} or {c.module} missing (benches/e2e/build.sh)")
            c.enabled = False
    return cs


class Writer:
    """The set-backend writer daemon, API over TCP on loopback."""

    def __init__(self, n):
        self.dir = os.path.join(RUN, f"writer-{n}")
        self.port = BASE_PORT + 50
        self.table = os.path.join(self.dir, "table")
        self.proc = None

    def start(self, fresh):
        if fresh and os.path.exists(self.dir):
            shutil.rmtree(self.dir)
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self.proc = Proc(
            "writer",
            [writer_bin(), "serve", "--data-dir", self.dir, "--listen",
             f"127.0.0.1:{self.port}", "--table", self.table],
            self.dir,
            env={"API_TOKEN": TOKEN, "RUST_LOG": "warn"},
        )
        t0 = time.monotonic()
        self.proc.start()
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if not self.proc.alive():
                self.proc.tail()
                raise RuntimeError("writer exited")
            try:
                st, _ = http_get(self.port, "localhost", "/healthz")
                if st == 200:
                    return time.monotonic() - t0
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError("writer not ready")

    def conn(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)

    def load(self, data, batch=20000):
        """PATCH /entries.json in batches; returns seconds."""
        c = self.conn()
        t0 = time.monotonic()
        ups = []

        def flush():
            body = json.dumps({"upsert": ups}).encode()
            c.request("PATCH", "/entries.json", body=body, headers={
                "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
            r = c.getresponse()
            text = r.read()
            if r.status >= 300:
                raise RuntimeError(f"PATCH: {r.status} {text[:300]!r}")
            ups.clear()

        for line in open(os.path.join(data, "hosts.txt")):
            h, b = line.split()
            ups.append({"host": h, "backend": b})
            if len(ups) >= batch:
                flush()
        if ups:
            flush()
        c.close()
        return time.monotonic() - t0

    def rss_kib(self):
        try:
            with open(f"/proc/{self.proc.p.pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def stop(self):
        if self.proc:
            self.proc.stop(signal.SIGTERM)


class Upstream:
    def __init__(self):
        self.prefix = os.path.join(RUN, "upstream")
        self.proc = None

    def start(self):
        if os.path.exists(self.prefix):
            shutil.rmtree(self.prefix)
        for sub in ("tmp/body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi"):
            os.makedirs(os.path.join(self.prefix, sub))
        cfg = os.path.join(self.prefix, "nginx.conf")
        render("upstream.conf", cfg, prefix=self.prefix, workers=1, user_line=user_line(),
               up0=UP_PORTS[0], up1=UP_PORTS[1], up2=UP_PORTS[2], up3=UP_PORTS[3],
               status_port=STATUS_PORT)
        self.proc = Proc("upstream", [DEBIAN_NGINX, "-p", self.prefix, "-c", cfg, "-e",
                                      os.path.join(self.prefix, "error.log")], self.prefix)
        self.proc.start()
        for _ in range(200):
            try:
                if http_get(UP_PORTS[3], "x")[1] == str(UP_PORTS[3]):
                    return
            except OSError:
                time.sleep(0.05)
        self.proc.tail()
        raise RuntimeError("upstream not ready")

    def stats(self):
        """(connections accepted, requests) so far, from stub_status. The reading itself is one
        connection and one request: a difference of two readings counts the later one."""
        st, body = http_get(STATUS_PORT, "status", "/status", timeout=10.0)
        m = re.search(r"\n\s*(\d+)\s+(\d+)\s+(\d+)", body)
        if st != 200 or not m:
            raise RuntimeError(f"upstream stub_status: {st} {body!r}")
        return int(m.group(1)), int(m.group(3))

    def stop(self):
        if self.proc:
            self.proc.stop(signal.SIGQUIT)


class Stack:
    """The upstream, the writer and the chosen contenders for one table size."""

    def __init__(self, n, names, data_tag=""):
        self.n, self.names, self.data_tag = n, names, data_tag
        cs = [c for c in contenders() if c.enabled]
        want = set(names) | {c.alias.name for c in cs if c.kind == "alias" and c.name in names}
        self.cs = [c for c in cs if c.name in want]
        for c in self.cs:
            c.measured = c.name in names
        self.up = Upstream()
        self.writer = None
        self.info = {}

    def __enter__(self):
        try:
            return self._start()
        except BaseException:
            self.__exit__()
            raise

    def _start(self):
        n = self.n
        if self.data_tag:  # a fresh copy, whatever an earlier run left
            shutil.rmtree(os.path.join(RUN, f"data-{n}{self.data_tag}"), ignore_errors=True)
        self.data = prepare_data(n, self.data_tag)
        self.up.start()
        sample = (host_name(n - 1), backend_port(n - 1))
        if any(c.module for c in self.cs):
            self.writer = Writer(n)
            st = self.writer.start(fresh=True)
            lt = self.writer.load(self.data)
            self.writer.stop()
            # a restart measures the writer's start with n entries in its store
            st = self.writer.start(fresh=False)
            self.info["set-backend"] = {
                "import_s": lt, "writer_start_s": st,
                "table_bytes": os.path.getsize(self.writer.table),
                "writer_pss_kib": self.writer.rss_kib(),
            }
            log(f"writer: {n} entries imported in {lt:.2f}s, restart {st:.2f}s")
        for c in self.cs:
            if c.kind == "alias":
                continue
            c.start(n, self.data, table=self.writer.table if self.writer else None)
            c.ready_s = c.wait_ready(sample)
            log(f"{c.name}: ready in {c.ready_s:.2f}s")
        for c in self.cs:
            if c.kind == "alias":
                c.proc, c.ready_s = c.alias.proc, c.alias.ready_s
            c.check(n)
        return self

    def __exit__(self, *exc):
        for c in self.cs:
            if c.kind != "alias":
                try:
                    c.stop()
                except Exception as e:  # keep stopping the others
                    log(f"{c.name}: stop: {e}")
        if self.writer:
            self.writer.stop()
        self.up.stop()


# ---------------------------------------------------------------------------------------------
# throughput


def run_wrk(port, n, dist, secs, conns, threads=1, script="hosts.lua", extra=()):
    argv = [WRK, f"-t{threads}", f"-c{conns}", f"-d{secs}s", "--timeout", "5s",
            "-s", os.path.join(HERE, "wrk", script), f"http://127.0.0.1:{port}/", "--",
            str(n), dist, *extra]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=secs + 60)
    for line in out.stdout.splitlines():
        if line.startswith("JSON "):
            r = json.loads(line[5:])
            r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
            r["errors"] = sum(r[k] for k in r if k.startswith("err_"))
            return r
    raise RuntimeError(f"wrk: no result: {out.stdout} {out.stderr}")


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
            for dist in dists:
                for rnd in range(a.rounds):
                    for c in order:
                        run_wrk(c.target_port, n, dist, a.warmup, a.conns)
                        la = loadavg()
                        pids = tree_pids(c.proc.p.pid)
                        up0 = st.up.stats()
                        cpu0 = cpu_ns(pids)
                        r = run_wrk(c.target_port, n, dist, a.secs, a.conns)
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


def write_csv(path, rows):
    if not rows:
        return
    keys = []
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


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
                load1_median=round(statistics.median(float(x["load1"]) for x in rounds.values()), 2),
            ))
    write_csv(os.path.join(RESULTS, f"throughput-summary{tag}.csv"), summary)
    for s in summary:
        print(f"{s['hosts']:>8} {s['dist']:8} {s['contender']:18} {s['rps_median']:>8} "
              f"[{s['rps_min']}..{s['rps_max']}] p99 {s['p99_ms_median']:.2f} ms "
              f"vs map {s['vs_map']} vs lua {s['vs_lua']} | cpu {s['cpu_us_median']} µs/req "
              f"capacity vs map {s['cpu_vs_map']} vs lua {s['cpu_vs_lua']}")


# ---------------------------------------------------------------------------------------------
# propagation


class Conn:
    """A keep-alive HTTP/1.1 connection with a minimal response parser (fast enough to poll)."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def send(self, host):
        self.s.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())

    def recv(self):
        while b"\r\n\r\n" not in self.buf:
            d = self.s.recv(65536)
            if not d:
                raise ConnectionError("closed")
            self.buf += d
        head, rest = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        hdr = {k.lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
        ln = int(hdr.get("content-length", "0"))
        while len(rest) < ln:
            d = self.s.recv(65536)
            if not d:
                raise ConnectionError("closed")
            rest += d
        self.buf = rest[ln:]
        return status, rest[:ln].decode().strip(), hdr.get("x-worker", "")

    def close(self):
        self.s.close()


def worker_conns(port, want, attempts=60, batch=48):
    """One keep-alive connection per worker (identified by X-Worker, the worker's pid). Opens
    connections in batches: an idle nginx tends to hand sequential connections to one worker."""
    got = {}
    for _ in range(attempts):
        batch_conns = [Conn(port) for _ in range(batch)]
        for c in batch_conns:
            c.send(host_name(0))
        for c in batch_conns:
            _, _, w = c.recv()
            if w not in got:
                got[w] = c
            else:
                c.close()
        if len(got) >= want:
            break
        time.sleep(0.02)
    if len(got) < want:
        log(f"port {port}: reached {len(got)} of {want} workers")
    return list(got.values())


def probe_until(conns, host, want, t_ack, timeout=5.0):
    """Poll every connection until each answers `want`. Returns (seconds from the ack to the
    answer that completed the set, i.e. the slowest worker's first new answer; the number of
    requests sent after the ack that still got the old backend)."""
    first_recv = {}
    stale = 0
    deadline = t_ack + timeout
    while len(first_recv) < len(conns):
        if time.perf_counter() > deadline:
            return None, stale
        pending = [c for c in conns if c not in first_recv]
        for c in pending:
            c.send(host)
        for c in pending:
            st, body, _ = c.recv()
            if st == 200 and body == want:
                first_recv[c] = time.perf_counter()
            else:
                stale += 1
    return max(first_recv.values()) - t_ack, stale


def probe_rtt(conns, host, count):
    """The probe loop's own round trip (no update, same 2 ms pauses as between updates): what
    the visibility numbers include."""
    v = []
    for _ in range(count):
        time.sleep(0.002)
        t = time.perf_counter()
        for c in conns:
            c.send(host)
        for c in conns:
            c.recv()
        v.append((time.perf_counter() - t) * 1000)
    return v


def fresh_probe_until(port, host, want, t_ack, stable=4, timeout=10.0):
    """For nginx reloads: new connections (old workers keep theirs) until `stable` consecutive
    new connections answer `want`; returns seconds after t_ack of the first of them."""
    run_start, ok = None, 0
    deadline = t_ack + timeout
    while time.perf_counter() < deadline:
        try:
            st, body = http_get(port, host, timeout=2.0)
        except OSError:
            st, body = 0, ""
        now = time.perf_counter()
        if st == 200 and body == want:
            if ok == 0:
                run_start = now
            ok += 1
            if ok >= stable:
                return run_start - t_ack
        else:
            ok = 0
    return None


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round((len(v) - 1) * p)))]


def cmd_propagation(a):
    n = a.hosts
    names = ["lua", "haproxy", "set-backend", "map", "set-backend-peer"]
    rows, summary = [], []
    rnd = random.Random(42)
    with Stack(n, names, data_tag="-propagation") as st:
        cs = {c.name: c for c in st.cs}
        w = st.writer

        def upd_set_backend(conn, host, backend):
            body = json.dumps({"host": host, "backend": backend})
            conn.request("POST", "/entries.json", body=body, headers={
                "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            assert r.status in (200, 201), r.status

        def upd_lua(conn, host, backend):
            conn.request("GET", "/set?" + urllib.parse.urlencode({"host": host, "backend": backend}))
            r = conn.getresponse()
            r.read()
            assert r.status == 200, r.status

        def upd_haproxy(_conn, host, backend):
            s = socket.socket(socket.AF_UNIX)
            s.connect(cs["haproxy"].sock)
            s.sendall(f"set map {cs['haproxy'].map_file} {host} {backend}\n".encode())
            out = b""
            while True:
                d = s.recv(4096)
                if not d:
                    break
                out += d
            s.close()
            assert out.strip() == b"", out

        apis = [
            ("set-backend", lambda: w.conn(), upd_set_backend,
             lambda p: f"127.0.0.1:{p}", cs["set-backend"].port),
            ("lua", lambda: http.client.HTTPConnection("127.0.0.1", cs["lua"].api_port),
             upd_lua, lambda p: f"127.0.0.1:{p}", cs["lua"].port),
            ("haproxy", lambda: None, upd_haproxy, lambda p: str(UP_PORTS.index(p)),
             cs["haproxy"].port),
        ]
        if "set-backend-peer" in cs:  # upstream mode: same writer and table, keep-alive probes
            apis.append(("set-backend-peer", lambda: w.conn(), upd_set_backend,
                         lambda p: f"127.0.0.1:{p}", cs["set-backend-peer"].port))
        states = {}  # host -> port, per table (both set-backend modes share the writer's)
        for name, mkconn, upd, value, port in apis:
            conns = worker_conns(port, 1 if name == "haproxy" else WORKERS)
            api = mkconn()
            state = states.setdefault("writer" if name.startswith("set-backend") else name, {})
            lat, writes, stale_total, stale_updates = [], [], 0, 0
            failures = 0
            rtt = probe_rtt(conns, host_name(0), a.updates)
            for i in range(a.updates):
                h = rnd.randrange(n)
                cur = state.get(h, backend_port(h))
                newp = rnd.choice([p for p in UP_PORTS if p != cur])
                t0 = time.perf_counter()
                upd(api, host_name(h), value(newp))
                t_ack = time.perf_counter()
                r, stale = probe_until(conns, host_name(h), str(newp), t_ack)
                stale_total += stale
                stale_updates += stale > 0
                if r is None:
                    failures += 1
                    continue
                state[h] = newp
                lat.append(r * 1000)
                writes.append((t_ack - t0) * 1000)
                rows.append(dict(contender=name, i=i, write_ms=round((t_ack - t0) * 1000, 4),
                                 visible_ms=round(r * 1000, 4), stale=stale,
                                 probe_rtt_ms=round(rtt[i], 4)))
                time.sleep(0.002)
            for c in conns:
                c.close()
            summary.append(dict(contender=name, updates=len(lat), failures=failures,
                                workers_probed=len(conns),
                                p50_ms=round(pct(lat, 0.5), 3), p99_ms=round(pct(lat, 0.99), 3),
                                max_ms=round(max(lat), 3),
                                stale_answers=stale_total, updates_with_stale=stale_updates,
                                probe_rtt_p50_ms=round(pct(rtt, 0.5), 3),
                                probe_rtt_p99_ms=round(pct(rtt, 0.99), 3),
                                write_p50_ms=round(pct(writes, 0.5), 3),
                                write_p99_ms=round(pct(writes, 0.99), 3)))
            log(f"propagation {name}: {summary[-1]}")

        # nginx map + reload
        m = cs["map"]
        mapfile = os.path.join(st.data, "nginx-map.conf")
        hosts = {i: backend_port(i) for i in range(n)}

        def reload_to(h, newp):
            hosts[h] = newp
            tmp = mapfile + ".tmp"
            with open(tmp, "w") as f:
                for i in range(n):
                    f.write(f"{host_name(i)} 127.0.0.1:{hosts[i]};\n")
            os.rename(tmp, mapfile)
            os.kill(m.proc.p.pid, signal.SIGHUP)
            return time.perf_counter()

        def reload_loop(count, stop=None, record=False):
            lat, failures = [], 0
            for i in range(count):
                if stop is not None and stop.is_set():
                    break
                h = rnd.randrange(n)
                newp = rnd.choice([p for p in UP_PORTS if p != hosts[h]])
                t_ack = reload_to(h, newp)
                r = fresh_probe_until(m.port, host_name(h), str(newp), t_ack,
                                      timeout=10.0 if n <= 100_000 else 60.0)
                if r is None:
                    failures += 1
                else:
                    lat.append(r * 1000)
                    if record:
                        rows.append(dict(contender="map-reload", i=i, write_ms=0,
                                         visible_ms=round(r * 1000, 4)))
            return lat, failures

        def settle():
            """Until only the current workers are left (old generations finished)."""
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and len(tree_pids(m.proc.p.pid)) > 1 + WORKERS:
                time.sleep(0.1)

        lat, failures = reload_loop(a.reloads, record=True)
        summary.append(dict(contender="map-reload", updates=len(lat), failures=failures,
                            workers_probed="new connections",
                            p50_ms=round(pct(lat, 0.5), 3), p99_ms=round(pct(lat, 0.99), 3),
                            max_ms=round(max(lat), 3)))
        log(f"propagation map-reload: {summary[-1]}")

        # requests failed or slowed by reloads: wrk on the map contender, without then with
        # reloads back to back
        under = {}
        for label, with_reloads in (("no reloads", False), ("reloads", True)):
            settle()
            stop = threading.Event()
            res = {}
            t = threading.Thread(target=lambda: res.update(
                run_wrk(m.port, n, "uniform", a.load_secs, a.conns)))
            t.start()
            nrel = 0
            if with_reloads:
                time.sleep(0.5)
                t_end = time.monotonic() + a.load_secs - 1.5
                while time.monotonic() < t_end:
                    l, _ = reload_loop(1)
                    nrel += 1
            t.join()
            under[label] = dict(reloads=nrel, rps=round(res["rps"]), requests=res["requests"],
                                errors=res["errors"],
                                err_connect=res["err_connect"], err_read=res["err_read"],
                                err_write=res["err_write"], err_status=res["err_status"],
                                err_timeout=res["err_timeout"],
                                p50_ms=res["lat_p50_us"] / 1000, p99_ms=res["lat_p99_us"] / 1000,
                                p999_ms=res["lat_p999_us"] / 1000, max_ms=res["lat_max_us"] / 1000)
            log(f"map under load, {label}: {under[label]}")
    sfx = "" if n == 1000 else f"-{n}"
    write_csv(os.path.join(RESULTS, f"propagation{sfx}.csv"), rows)
    with open(os.path.join(RESULTS, f"propagation-summary{sfx}.json"), "w") as f:
        json.dump(dict(hosts=n, summary=summary, reload_under_load=under, machine=machine()),
                  f, indent=1)
    for s in summary:
        print(s)


# ---------------------------------------------------------------------------------------------
# writes


def cmd_writes(a):
    n = a.hosts
    out = []
    with Stack(n, ["lua", "haproxy", "set-backend", "map"]) as st:
        cs = {c.name: c for c in st.cs}
        w = st.writer
        ports = [str(p) for p in UP_PORTS]
        for conns in (1, 16):
            argv = [WRK, "-t1", f"-c{conns}", f"-d{a.secs}s", "--timeout", "5s", "-s",
                    os.path.join(HERE, "wrk/writes.lua"), f"http://127.0.0.1:{w.port}/", "--",
                    "set-backend", str(n), TOKEN, *ports]
            r = parse_wrk(subprocess.run(argv, capture_output=True, text=True,
                                         timeout=a.secs + 60).stdout)
            out.append(dict(contender="set-backend", api="POST /entries.json (durable)",
                            clients=conns, writes_per_s=round(r["rps"]), errors=r["errors"],
                            p50_ms=r["lat_p50_us"] / 1000, p99_ms=r["lat_p99_us"] / 1000))
            argv = [WRK, "-t1", f"-c{conns}", f"-d{a.secs}s", "--timeout", "5s", "-s",
                    os.path.join(HERE, "wrk/writes.lua"), f"http://127.0.0.1:{cs['lua'].api_port}/",
                    "--", "lua", str(n), "-", *ports]
            r = parse_wrk(subprocess.run(argv, capture_output=True, text=True,
                                         timeout=a.secs + 60).stdout)
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
            c.request("PATCH", "/entries.json", body=json.dumps({"upsert": ups}), headers={
                "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
            r = c.getresponse()
            text = r.read()
            assert r.status < 300, (r.status, text[:300])
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


def parse_wrk(stdout):
    for line in stdout.splitlines():
        if line.startswith("JSON "):
            r = json.loads(line[5:])
            r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
            r["errors"] = sum(r[k] for k in r if k.startswith("err_"))
            return r
    raise RuntimeError(f"wrk: no result: {stdout}")


# ---------------------------------------------------------------------------------------------
# memory and start time


def cmd_memory(a):
    n = a.hosts
    rows = []
    names = ["floor", "map", "lua", "haproxy", "set-backend"]
    with Stack(n, names) as st:
        time.sleep(1)
        for c in st.cs:
            if c.kind == "alias":
                continue
            rows.append(dict(hosts=n, contender=c.name, ready_s=round(c.ready_s, 3),
                             pss_kib=c.memory_kib()))
        # touch every entry once (a full pass of requests would take minutes; a lookup
        # pass of 20k random hosts is enough to show the steady state per process)
        info = st.info.get("set-backend", {})
        rows.append(dict(hosts=n, contender="writer", ready_s=round(info.get("writer_start_s", 0), 3),
                         pss_kib=st.writer.rss_kib() if st.writer else 0,
                         table_bytes=info.get("table_bytes"),
                         import_s=round(info.get("import_s", 0), 3)))
    write_csv(os.path.join(RESULTS, f"memory-{n}.csv"), rows)
    for r in rows:
        print(r)


def machine():
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal"):
            mem = int(line.split()[1]) // 1024
    return dict(cpu=cpu, cores=os.cpu_count(), mem_mib=mem, kernel=platform.release(),
                loadavg=os.getloadavg(), date=datetime.datetime.utcnow().isoformat(timespec="seconds"))


def cmd_machine(a):
    info = machine()
    info["nginx_debian"] = subprocess.run([DEBIAN_NGINX, "-v"], capture_output=True, text=True).stderr.strip()
    info["haproxy"] = subprocess.run([HAPROXY, "-v"], capture_output=True, text=True).stdout.splitlines()[0]
    info["wrk"] = subprocess.run([WRK, "-v"], capture_output=True, text=True).stdout.splitlines()[0]
    info["commit"] = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                    capture_output=True, text=True).stdout.strip()
    info["upstream_mode"] = module_has_peer()
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "machine.json"), "w") as f:
        json.dump(info, f, indent=1)
    print(json.dumps(info, indent=1))


def report_throughput(p, tag):
    """The throughput tables and ratios of one run (tag "": throughput.csv; else throughput-TAG.csv)."""
    sfx = f"-{tag}" if tag else ""
    ts = os.path.join(RESULTS, f"throughput-summary{sfx}.csv")
    if os.path.exists(ts):
        rows = read_csv(ts)
        order = [c.name for c in contenders()]
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
                 ("keepalive", "lua-balancer")]
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


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--sizes", default="1000,100000,1000000")
    t.add_argument("--dists", default="uniform,zipf")
    t.add_argument("--rounds", type=int, default=3)
    t.add_argument("--secs", type=int, default=5)
    t.add_argument("--warmup", type=int, default=1)
    t.add_argument("--conns", type=int, default=32)
    t.add_argument("--contenders", default="floor,map,lua,set-backend,haproxy-close,map-1.28,"
                   "set-backend-1.28,keepalive,map-upstream,haproxy,set-backend-peer,"
                   "set-backend-peer-1.28")
    t.add_argument("--skip-1m", default="", help="contenders left out above 100k hosts")
    t.add_argument("--tag", default="", help="results in throughput-TAG.csv, … (keeps the main run's)")
    pr = sub.add_parser("propagation")
    pr.add_argument("--hosts", type=int, default=1000)
    pr.add_argument("--updates", type=int, default=1000)
    pr.add_argument("--reloads", type=int, default=1000)
    pr.add_argument("--load-secs", type=int, default=15)
    pr.add_argument("--conns", type=int, default=32)
    w = sub.add_parser("writes")
    w.add_argument("--hosts", type=int, default=100000)
    w.add_argument("--secs", type=int, default=5)
    w.add_argument("--reload-count", type=int, default=20)
    m = sub.add_parser("memory")
    m.add_argument("--hosts", type=int, default=1000000)
    sub.add_parser("machine")
    sub.add_parser("report")
    a = p.parse_args()
    # TERM / HUP (timeout, a closed terminal) unwind like Ctrl-C, so the servers are stopped
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    os.makedirs(RUN, exist_ok=True)
    {"throughput": cmd_throughput, "propagation": cmd_propagation, "writes": cmd_writes,
     "memory": cmd_memory, "machine": cmd_machine, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    main()
