"""`propagation`: from a write's acknowledgement to every nginx worker routing the new backend,
per update API (set-backend's writer, the Lua dict's endpoint, HAProxy's runtime socket), and
nginx `map` + reload, alone and under wrk load."""

import http.client
import json
import os
import random
import signal
import socket
import threading
import time
import urllib.parse

from .config import RESULTS, TOKEN, UP_PORTS, WORKERS, backend_port, host_name, log
from .machine import machine
from .procs import http_get, tree_pids
from .results import pct, write_csv
from .stack import Stack
from .wrk import run_wrk


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

        def reload_loop(count, record=False):
            lat, failures = [], 0
            for i in range(count):
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
            res = {}
            t = threading.Thread(target=lambda: res.update(
                run_wrk(m.port, n, "uniform", a.load_secs, a.conns)))
            t.start()
            nrel = 0
            if with_reloads:
                time.sleep(0.5)
                t_end = time.monotonic() + a.load_secs - 1.5
                while time.monotonic() < t_end:
                    reload_loop(1)
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
