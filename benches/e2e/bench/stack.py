"""One run's servers: the data files, the upstream, the set-backend writer and the chosen
contenders for one table size, started together and stopped together (`with Stack(…)`)."""

import http.client
import json
import os
import re
import shutil
import signal
import time

from .config import (DEBIAN_NGINX, RUN, SET_PORTS, STATUS_PORT, TOKEN, UP_PORTS, WRITER_PORT,
                     backend_port, host_name, log)
from .contenders import contenders, render, writer_bin
from .procs import (Proc, http_get, make_nginx_prefix, nginx_argv, pss_kib_of, user_line,
                    wait_until)


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


class Writer:
    """The set-backend writer daemon, API over TCP on loopback. `sets`: the writer of the table
    where every host is the 2-backend set SET_PORTS (its own directory and port)."""

    def __init__(self, n, sets=False):
        self.sets = sets
        self.dir = os.path.join(RUN, f"writer-{n}" + ("-2set" if sets else ""))
        self.port = WRITER_PORT + (1 if sets else 0)
        self.table = os.path.join(self.dir, "table")
        self.proc = None

    def start(self, fresh):
        """Starts the writer (on an empty store if `fresh`); returns the seconds until healthy."""
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
        return wait_until(lambda: http_get(self.port, "localhost", "/healthz")[0] == 200,
                          self.proc, "writer", 600, t0)

    def conn(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)

    def patch(self, c, upserts):
        """One `PATCH /entries.json` of these upserts on connection `c`."""
        c.request("PATCH", "/entries.json", body=json.dumps({"upsert": upserts}).encode(),
                  headers={"Authorization": f"Bearer {TOKEN}",
                           "Content-Type": "application/json"})
        r = c.getresponse()
        text = r.read()
        if r.status >= 300:
            raise RuntimeError(f"PATCH: {r.status} {text[:300]!r}")

    def load(self, data, batch=20000):
        """PATCH /entries.json in batches; returns seconds."""
        c = self.conn()
        t0 = time.monotonic()
        ups = []
        for line in open(os.path.join(data, "hosts.txt")):
            h, b = line.split()
            if self.sets:
                ups.append({"host": h, "backends": [{"backend": f"127.0.0.1:{p}"}
                                                    for p in SET_PORTS]})
            else:
                ups.append({"host": h, "backend": b})
            if len(ups) >= batch:
                self.patch(c, ups)
                ups = []
        if ups:
            self.patch(c, ups)
        c.close()
        return time.monotonic() - t0

    def rss_kib(self):
        return pss_kib_of(self.proc.p.pid)

    def stop(self):
        if self.proc:
            self.proc.stop(signal.SIGTERM)


class Upstream:
    """One Debian nginx worker on the 4 upstream ports, answering its port; stub_status."""

    def __init__(self):
        self.prefix = os.path.join(RUN, "upstream")
        self.proc = None

    def start(self):
        if os.path.exists(self.prefix):
            shutil.rmtree(self.prefix)
        make_nginx_prefix(self.prefix)
        cfg = os.path.join(self.prefix, "nginx.conf")
        render("upstream.conf", cfg, prefix=self.prefix, workers=1, user_line=user_line(),
               up0=UP_PORTS[0], up1=UP_PORTS[1], up2=UP_PORTS[2], up3=UP_PORTS[3],
               status_port=STATUS_PORT)
        self.proc = Proc("upstream", nginx_argv(DEBIAN_NGINX, self.prefix, cfg), self.prefix)
        self.proc.start()
        wait_until(lambda: http_get(UP_PORTS[3], "x")[1] == str(UP_PORTS[3]), self.proc,
                   "upstream", 10)

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
        self.set_writer = None  # the table of 2-backend sets, for the contenders with `sets`
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
        sample = (host_name(n - 1), n - 1)
        if any(c.module and not c.sets for c in self.cs):
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
        if any(c.sets for c in self.cs):
            self.set_writer = Writer(n, sets=True)
            self.set_writer.start(fresh=True)
            lt = self.set_writer.load(self.data)
            log(f"writer (2-backend sets): {n} entries imported in {lt:.2f}s")
        for c in self.cs:
            if c.kind == "alias":
                continue
            w = self.set_writer if c.sets else self.writer
            c.start(n, self.data, table=w.table if w else None)
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
        for w in (self.writer, self.set_writer):
            if w:
                w.stop()
        self.up.stop()
