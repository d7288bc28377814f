#!/usr/bin/env python3
"""Fleet mode on etcd (`make bench-fleet`): propagation between nodes, 1M hosts, bootstrap,
restart.

Runs `make fleet`'s shape (scripts/fleet.sh: 3 etcd members and two nodes, nginx + writer
each, on loopback) on the release build of target-bench/, then:

1. propagation: WRITES POSTs through node A's API (its nginx, keep-alive), each a new host
   routed to A's demo backend; after each acknowledgement, node B's nginx is asked for that
   host (keep-alive, no pause) until it routes it: the acknowledgement's latency, and the time
   from the acknowledgement on A to the first answer routed by B;
2. HOSTS hosts: one PUT replace-all to A's writer socket, timed, then until B has applied it; etcd's disk
   (each member's data directory) and memory (each member's VmRSS);
3. bootstrap: a third writer (no nginx) on a fresh data directory joins: the time until its
   /healthz answers 200, and until its applied revision reaches etcd's (with its
   `set_backend_fleet_reread_seconds`);
4. restart with the cache: that writer stopped (SIGTERM), 1000 writes through A meanwhile,
   started again on its data: the time until /healthz answers 200 (serving, from its store and
   table), and until it applied the last of those writes (caught up).

Writes benches/results/fleet<TAG>.csv (measure, value, unit, detail) and
benches/results/fleet-propagation<TAG>.csv (one row per write), and prints a summary with
the load average. Standard library only.
"""

import argparse
import csv
import glob
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TOKEN = "fleet-bench-token-0123456789abcdef"
DOMAIN = "fleet.bench"


def free_run(n):
    """The first of n consecutive free ports on 127.0.0.1 (fleet.sh numbers from a base)."""
    for base in range(21000, 32000, 16):
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                s.bind(("127.0.0.1", p))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    sys.exit("no run of free ports")


class Http:
    """One keep-alive HTTP connection to 127.0.0.1:port."""

    def __init__(self, port, timeout=600):
        self.port, self.timeout = port, timeout
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def call(self, method, path, host, body=None, auth=True):
        headers = {"Host": host}
        if auth:
            headers["Authorization"] = "Bearer " + TOKEN
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            self.conn.request(method, path, body=body, headers=headers)
            r = self.conn.getresponse()
            return r.status, r.read()
        except (ConnectionError, http.client.HTTPException, OSError):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            raise

    def metric(self, host, name):
        _, body = self.call("GET", "/metrics", host)
        m = re.search(rb"^" + re.escape(name.encode()) + rb" (\S+)$", body, re.M)
        return float(m.group(1)) if m else None


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def ms(v):
    return round(v * 1000, 2)


def wait(what, cond, limit=600, step=0.005):
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > limit:
            sys.exit(f"timed out waiting for {what}")
        time.sleep(step)
    return time.monotonic() - t0


def start_fleet(a, work, port, etcd_port):
    env = dict(os.environ, SKIP_BUILD="1", CARGO_TARGET_DIR=a.target, PROFILE="release",
               PORT=str(port), ETCD_PORT=str(etcd_port), DOMAIN=DOMAIN, API_TOKEN=TOKEN,
               FLEET_DIR=os.path.join(work, "fleet"), RUST_LOG="warn")
    log = open(os.path.join(work, "fleet.log"), "w")
    p = subprocess.Popen(["bash", os.path.join(ROOT, "scripts/fleet.sh")], env=env, stdout=log,
                         stderr=subprocess.STDOUT, start_new_session=True)
    wait("the fleet", lambda: "Ctrl-C stops everything" in open(log.name).read() or p.poll() is not None,
         limit=300, step=0.1)
    if p.poll() is not None:
        sys.exit(f"scripts/fleet.sh exited: see {log.name}")
    return p


def stop_fleet(p):
    os.killpg(p.pid, signal.SIGINT)
    try:
        p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=60)


def propagation(a, node_a, node_b, demo):
    api, routed = Http(node_a), Http(node_b, timeout=10)
    rows = []
    for i in range(a.writes):
        host = f"prop-{i}.bench"
        body = json.dumps({"host": host, "backend": f"127.0.0.1:{demo}"}).encode()
        t0 = time.monotonic()
        status, text = api.call("POST", "/entries.json", "api." + DOMAIN, body)
        t_ack = time.monotonic()
        assert status == 201, (status, text)
        polls = 0
        while True:
            polls += 1
            st, _ = routed.call("GET", "/", host, auth=False)
            if st == 200:
                break
            assert st == 404, st
        t_routed = time.monotonic()
        rows.append({"write": i, "ack_ms": ms(t_ack - t0), "ack_to_routed_on_b_ms": ms(t_routed - t_ack),
                     "polls": polls, "revision": json.loads(text)["revision"]})
    return rows


def etcd_usage(work):
    """Each member's data directory size (bytes) and VmRSS (kB), found by its data directory."""
    out = []
    for d in sorted(glob.glob(os.path.join(work, "fleet/etcd/m*"))):
        size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(d) for f in fs)
        rss = None
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
                if cmd and cmd[0].endswith(b"etcd") and d.encode() in cmd:
                    rss = int(re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{pid}/status").read()).group(1))
            except (OSError, AttributeError):
                pass
        out.append((os.path.basename(d), size, rss))
    return out


def start_writer(a, data, endpoints, port, name):
    env = dict(os.environ, API_TOKEN=TOKEN, RUST_LOG="info")
    os.makedirs(data, exist_ok=True)
    log = open(os.path.join(data, "writer.log"), "a")
    args = [os.path.join(a.target, "release/set-backend"), "serve", "--data-dir", data,
            "--listen", f"127.0.0.1:{port}", "--etcd", endpoints, "--node-name", name]
    t0 = time.monotonic()
    p = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=log)

    def serving():
        if p.poll() is not None:
            sys.exit(f"the writer exited: see {log.name}")
        try:
            return Http(port, timeout=5).call("GET", "/healthz", "localhost", auth=False)[0] == 200
        except OSError:
            return False

    wait("the writer's /healthz", serving)
    return p, time.monotonic() - t0, t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default=os.path.join(ROOT, "target-bench"))
    ap.add_argument("--writes", type=int, default=1000)
    ap.add_argument("--hosts", type=int, default=1_000_000)
    ap.add_argument("--tag", default="", help="suffix of the result files (fleet<TAG>.csv)")
    a = ap.parse_args()
    nginx = sorted(glob.glob(os.path.join(a.target, "release/build/nginx-sys-*/out/objs/nginx")),
                   key=os.path.getmtime)
    if not nginx:
        sys.exit(f"no nginx in {a.target}/release: run make bench-build")
    os.environ["NGINX_BIN"] = nginx[-1]
    work = tempfile.mkdtemp(prefix="fleet-bench-", dir=os.path.join(ROOT, "target"))
    # Nodes A and B: nginx and demo backend on port … port+3; etcd's members from port+8.
    port = free_run(16)
    etcd_port = port + 8
    endpoints = ",".join(f"http://127.0.0.1:{etcd_port + 2 * i}" for i in range(3))
    node_a, node_b = port, port + 2
    results = [("loadavg_start", " ".join(f"{x:.2f}" for x in os.getloadavg()), "1/5/15 min", "")]
    print(f"fleet bench: data in {work}, load average {os.getloadavg()}", flush=True)

    fleet = start_fleet(a, work, port, etcd_port)
    try:
        # 1. Propagation.
        rows = propagation(a, node_a, node_b, port + 1)
        for k in ("ack_ms", "ack_to_routed_on_b_ms"):
            v = [r[k] for r in rows]
            for p in (50, 99):
                results.append((f"{k}_p{p}", pct(v, p), "ms", f"{len(v)} writes"))
            results.append((f"{k}_max", max(v), "ms", f"{len(v)} writes"))
        print(f"propagation: ack p50 {pct([r['ack_ms'] for r in rows], 50)} ms; A ack -> B routes "
              f"p50 {pct([r['ack_to_routed_on_b_ms'] for r in rows], 50)} / "
              f"p99 {pct([r['ack_to_routed_on_b_ms'] for r in rows], 99)} ms", flush=True)

        # 2. HOSTS hosts by one replace-all through A.
        api_a, api_b = Http(node_a), Http(node_b)
        body = json.dumps([{"host": f"h{i}.b", "backend": f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}:80"}
                           for i in range(a.hosts)]).encode()
        # Straight to A's writer socket: through nginx, proxy_read_timeout (60 s) would cut it.
        with open(os.path.join(work, "put.json"), "wb") as f:
            f.write(body)
        t0 = time.monotonic()
        out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT",
                              "--unix-socket", os.path.join(work, "fleet/node1/api.sock"),
                              "-H", "Authorization: Bearer " + TOKEN, "-H", "Content-Type: application/json",
                              "--data-binary", "@" + f.name, "http://localhost/entries.json"],
                             capture_output=True, text=True)
        put_s = time.monotonic() - t0
        assert out.stdout == "200", (out.stdout, out.stderr)
        rev = int(api_a.metric("api." + DOMAIN, "set_backend_fleet_applied_revision"))
        b_s = wait("B to apply the replace-all", lambda: (api_b.metric("api." + DOMAIN, "set_backend_fleet_applied_revision") or 0) >= rev,
                   step=0.05)
        results += [("replace_all_put_s", round(put_s, 2), "s", f"{a.hosts} hosts, PUT to A's writer socket, answered once A applied it"),
                    ("replace_all_b_after_a_s", round(b_s, 2), "s", "until B's applied revision reached A's")]
        print(f"replace-all of {a.hosts}: {put_s:.1f} s on A, B {b_s:.1f} s later", flush=True)
        time.sleep(5)  # the old generation's deletion in the background
        for name, size, rss in etcd_usage(work):
            results += [(f"etcd_{name}_disk_mb", round(size / 1e6, 1), "MB", f"data directory at {a.hosts} hosts"),
                        (f"etcd_{name}_rss_mb", round((rss or 0) / 1024, 1), "MB", f"VmRSS at {a.hosts} hosts")]

        # 3. Bootstrap of a third writer.
        boot_dir = os.path.join(work, "boot")
        wport = free_run(1)
        p, ready_s, t0 = start_writer(a, boot_dir, endpoints, wport, "boot")
        w = Http(wport)
        target = int(api_a.metric("api." + DOMAIN, "set_backend_fleet_applied_revision"))
        wait("the bootstrap", lambda: (w.metric("localhost", "set_backend_fleet_applied_revision") or 0) >= target, step=0.02)
        boot_s = time.monotonic() - t0
        reread = w.metric("localhost", "set_backend_fleet_reread_seconds")
        entries = w.metric("localhost", "set_backend_entries")
        results += [("bootstrap_healthz_s", round(ready_s, 2), "s", "fresh data directory: /healthz 200"),
                    ("bootstrap_applied_s", round(boot_s, 2), "s", f"until applied = etcd's revision ({entries:.0f} entries)"),
                    ("bootstrap_reread_metric_s", reread, "s", "set_backend_fleet_reread_seconds")]
        print(f"bootstrap: healthz {ready_s:.2f} s, applied {boot_s:.2f} s (re-read {reread} s)", flush=True)

        # 4. Restart with the cache, 1000 writes missed meanwhile.
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=600)
        last = None
        for i in range(1000):
            body = json.dumps({"host": f"missed-{i}.bench", "backend": "10.0.0.1:80"}).encode()
            status, text = api_a.call("POST", "/entries.json", "api." + DOMAIN, body)
            assert status == 201, (status, text)
            last = json.loads(text)["revision"]
        p, ready_s, t0 = start_writer(a, boot_dir, endpoints, wport, "boot")
        w = Http(wport)
        wait("the catch-up", lambda: (w.metric("localhost", "set_backend_fleet_applied_revision") or 0) >= last, step=0.005)
        caught_s = time.monotonic() - t0
        results += [("restart_healthz_s", round(ready_s, 3), "s", f"{a.hosts} hosts cached: /healthz 200"),
                    ("restart_caught_up_s", round(caught_s, 3), "s", "until it applied the last of 1000 writes made while it was down")]
        print(f"restart: healthz {ready_s:.3f} s, caught up {caught_s:.3f} s", flush=True)
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=600)
    finally:
        stop_fleet(fleet)
    results.append(("loadavg_end", " ".join(f"{x:.2f}" for x in os.getloadavg()), "1/5/15 min", ""))

    out = os.path.join(ROOT, "benches/results")
    with open(os.path.join(out, f"fleet{a.tag}.csv"), "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["measure", "value", "unit", "detail"])
        wr.writerows(results)
    with open(os.path.join(out, f"fleet-propagation{a.tag}.csv"), "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)
    for r in results:
        print(" | ".join(str(x) for x in r))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
