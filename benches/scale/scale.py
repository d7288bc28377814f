#!/usr/bin/env python3
"""The writer at millions of hosts (`make bench-scale`): import, writes during growth, memory,
restart.

Starts a release `set-backend serve` on a fresh data directory (TCP on 127.0.0.1), then:

1. imports N hosts through the API in PATCH batches of 100k (`site-<i>.example.com` →
   `10.x.y.z:8080`), timing each batch;
2. whenever a batch leaves the table growing (`set_backend_table_growing 1`: the next
   generation is being built beside the current one), pauses the import and sends single POSTs
   from 4 concurrent clients until the growth is installed, timing each: what a write waits
   behind a growth;
3. sends 300 single POSTs one after another;
4. samples the writer's memory every 50 ms all along (`/proc/PID/status`: RssAnon, the
   process's own memory; RssFile, the table file's and the store's pages, shared with the page
   cache), stops it with SIGTERM, starts it again on the same data and times it until
   `/healthz` answers 200 (with its memory peak meanwhile).

All along, `probe.py` runs beside the writer (`--no-probe` to leave it out): how late a 10 ms
sleep wakes up and how long a 4 KiB write + fdatasync takes on the same disk, every 10 ms. For
the slowest POSTs it reports what the probe saw meanwhile, so that a stall of the shared machine
(CPU or disk) is told apart from one of the writer.

Writes benches/results/scale-<N>.json and prints a summary. Standard library only.
"""

import argparse
import bisect
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

TOKEN = "scale-bench-token-0123456789abcdef"
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Api:
    """One keep-alive HTTP connection to the writer."""

    def __init__(self, port):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)

    def call(self, method, path, body=None):
        headers = {"Authorization": "Bearer " + TOKEN}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            self.conn.request(method, path, body=body, headers=headers)
            r = self.conn.getresponse()
            return r.status, r.read()
        except (ConnectionError, http.client.HTTPException, OSError):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
            raise

    def metric(self, name):
        _, body = self.call("GET", "/metrics")
        m = re.search(rb"^" + re.escape(name.encode()) + rb" (\S+)$", body, re.M)
        return float(m.group(1)) if m else None


class Memory(threading.Thread):
    """Samples /proc/PID/status every 50 ms: the peaks of RssAnon and RssFile (kB)."""

    FIELDS = ("RssAnon", "RssFile", "VmRSS", "VmHWM")

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = {f: 0 for f in self.FIELDS}
        self.last = {f: 0 for f in self.FIELDS}
        self.stop = threading.Event()

    def sample(self):
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    k, _, v = line.partition(":")
                    if k in self.FIELDS:
                        self.last[k] = int(v.split()[0])
                        self.peak[k] = max(self.peak[k], self.last[k])
        except OSError:
            pass

    def run(self):
        while not self.stop.is_set():
            self.sample()
            time.sleep(0.05)

    def done(self):
        self.stop.set()
        self.join()
        self.sample()
        return {"peak_kb": dict(self.peak), "last_kb": dict(self.last)}


def start(binary, data, port, log_name, cache_mib):
    env = dict(os.environ, API_TOKEN=TOKEN, RUST_LOG="info")
    log = open(os.path.join(data, log_name), "w")
    args = [binary, "serve", "--data-dir", data, "--listen", f"127.0.0.1:{port}"]
    if cache_mib is not None:
        args += ["--store-cache-mib", str(cache_mib)]
    p = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=log)
    mem = Memory(p.pid)
    mem.start()
    t0 = time.monotonic()
    while True:
        if p.poll() is not None:
            sys.exit(f"the writer exited: see {log.name}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/healthz")
            if c.getresponse().status == 200:
                break
        except OSError:
            pass
        time.sleep(0.005)
    return p, mem, time.monotonic() - t0


def stop(p):
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=600)
    return time.monotonic() - t0


def backend(i):
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}:8080"


def batch_body(lo, hi):
    return json.dumps(
        {"upsert": [{"host": f"site-{i}.example.com", "backend": backend(i)} for i in range(lo, hi)]}
    ).encode()


def pct(values, p):
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def posts_during_growth(port, api, label):
    """4 clients POST single entries until the growth in progress is installed."""
    stop_flag = threading.Event()
    lat = []
    lock = threading.Lock()

    def client(k):
        a = Api(port)
        n = 0
        while not stop_flag.is_set():
            body = json.dumps({"host": f"grow-{label}-{k}-{n}.example.com", "backend": backend(n)})
            t0 = time.monotonic()
            status, text = a.call("POST", "/entries.json", body.encode())
            dt = time.monotonic() - t0
            assert status in (200, 201), (status, text)
            with lock:
                lat.append((t0, dt))
            n += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    while api.metric("set_backend_table_growing") == 1.0 and time.monotonic() - t0 < 600:
        time.sleep(0.02)
    stop_flag.set()
    for t in threads:
        t.join()
    return lat, time.monotonic() - t0


def start_probe(data):
    """Starts `probe.py` beside the writer: the machine's own CPU and disk delays."""
    out = os.path.join(data, "probe.txt")
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "probe.py"),
                          os.path.join(data, "probe.dat"), out])
    return p, out


def probe_report(probe, growth_posts, windows, worst=10):
    """The probe's delays during the growths, and beside each of the `worst` slowest POSTs (the
    samples whose sleep or fdatasync overlapped it): whether the machine stalled too."""
    p, out = probe
    p.terminate()
    p.wait()
    samples = []
    with open(out) as f:
        for line in f:
            b, late, sync = map(float, line.split())
            samples.append((b, late, sync))
    during = [s for s in samples if any(lo <= s[0] <= hi for lo, hi in windows)]
    ms = lambda v: None if v is None else round(v * 1000, 2)
    report = {
        "samples_during_growths": len(during),
        "late_ms": {"p99": ms(pct([s[1] for s in during], 99)), "max": ms(max((s[1] for s in during), default=None))},
        "fdatasync_ms": {"p99": ms(pct([s[2] for s in during], 99)), "max": ms(max((s[2] for s in during), default=None))},
        "worst_posts": [],
    }
    wall = time.time() - time.monotonic()
    starts = [s[0] for s in samples]

    def near(t0, dt):
        # A sample covers [b - 0.01 - late, b] asleep and [b, b + sync] in fdatasync.
        i = bisect.bisect_left(starts, t0 - 1.0)
        j = bisect.bisect_right(starts, t0 + dt + 1.0)
        return [s for s in samples[i:j] if s[0] - 0.01 - s[1] <= t0 + dt and s[0] + s[2] >= t0]

    # A slow POST is the machine's when the probe, meanwhile, waited half as long or more (its
    # late wake-ups and fdatasyncs added up).
    slow = [(t0, dt) for t0, dt in growth_posts if dt > 0.05]
    own = [dt for t0, dt in slow if sum(s[1] + s[2] for s in near(t0, dt)) < dt / 2]
    report["posts_over_50ms"] = len(slow)
    report["posts_over_50ms_probe_calm"] = {"count": len(own), "max_ms": ms(max(own, default=None))}
    for t0, dt in sorted(growth_posts, key=lambda x: -x[1])[:worst]:
        near_samples = near(t0, dt)
        report["worst_posts"].append({
            "at": time.strftime("%H:%M:%S", time.gmtime(t0 + wall)) + f"{(t0 + wall) % 1:.3f}"[1:],
            "post_ms": ms(dt),
            "probe_late_max_ms": ms(max((s[1] for s in near_samples), default=None)),
            "probe_fdatasync_max_ms": ms(max((s[2] for s in near_samples), default=None)),
        })
    return report


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", default=os.path.join(ROOT, "target-bench/release/set-backend"))
    ap.add_argument("--hosts", type=int, default=int(os.environ.get("SCALE_HOSTS", 1_000_000)))
    ap.add_argument("--batch", type=int, default=100_000)
    ap.add_argument("--store-cache-mib", type=int, default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the data directory")
    ap.add_argument("--no-probe", action="store_true", help="no CPU and disk probe beside the writer")
    a = ap.parse_args()
    n = a.hosts
    data = tempfile.mkdtemp(prefix=f"scale-{n}-", dir=os.path.join(ROOT, "target"))
    port = free_port()
    result = {"hosts": n, "batch": a.batch, "loadavg_start": os.getloadavg(), "cpus": os.cpu_count()}
    print(f"scale: {n} hosts, data in {data}, load average {os.getloadavg()}", flush=True)

    probe = None if a.no_probe else start_probe(data)
    p, mem, _ = start(a.binary, data, port, "writer-1.log", a.store_cache_mib)
    api = Api(port)
    batches = []
    growth_posts = []
    growths = []
    windows = []
    for lo in range(0, n, a.batch):
        hi = min(n, lo + a.batch)
        body = batch_body(lo, hi)
        t0 = time.monotonic()
        status, text = api.call("PATCH", "/entries.json", body)
        dt = time.monotonic() - t0
        assert status == 200, (status, text[:300])
        batches.append(dt)
        # The engine starts a growth right after answering the group that calls for it.
        growing = False
        for _ in range(20):
            growing = api.metric("set_backend_table_growing") == 1.0
            if growing:
                break
            time.sleep(0.01)
        if growing:
            entries = api.metric("set_backend_entries")
            g0 = time.monotonic()
            lat, took = posts_during_growth(port, api, len(growths))
            windows.append((g0, time.monotonic()))
            growth_posts += lat
            worst = max((dt for _, dt in lat), default=0)
            growths.append({"entries": entries, "posts": len(lat), "seconds": round(took, 3),
                            "post_max_ms": round(worst * 1000, 2)})
            print(f"  growth at {entries:.0f} entries: {took:.2f} s, {len(lat)} POSTs, "
                  f"max {worst * 1000:.1f} ms", flush=True)
    import_s = sum(batches)
    singles = []
    for k in range(300):
        body = json.dumps({"host": f"single-{k}.example.com", "backend": backend(k)}).encode()
        t0 = time.monotonic()
        status, _ = api.call("POST", "/entries.json", body)
        singles.append(time.monotonic() - t0)
        assert status in (200, 201)
    entries = api.metric("set_backend_entries")
    generation = api.metric("set_backend_table_generation")
    file_bytes = api.metric("set_backend_table_file_bytes")
    bg = api.metric("set_backend_table_growths_total")
    pause = api.metric("set_backend_table_growth_pause_max_seconds")
    run1 = mem.done()
    shutdown_s = stop(p)

    p2, mem2, restart_s = start(a.binary, data, port, "writer-2.log", a.store_cache_mib)
    api2 = Api(port)
    entries2 = api2.metric("set_backend_entries")
    generation2 = api2.metric("set_backend_table_generation")
    time.sleep(0.5)
    run2 = mem2.done()
    stop(p2)
    log2 = open(os.path.join(data, "writer-2.log")).read()

    ms = lambda v: None if v is None else round(v * 1000, 2)
    growth_lat = [dt for _, dt in growth_posts]
    if probe is not None:
        result["probe"] = probe_report(probe, growth_posts, windows)
    result.update({
        "import_seconds": round(import_s, 2),
        "import_per_second": round(n / import_s),
        "batch_ms": {"median": ms(statistics.median(batches)), "max": ms(max(batches))},
        "growths": growths,
        "growths_in_background": bg,
        "engine_growth_pause_max_ms": ms(pause),
        "growth_post_ms": {"count": len(growth_lat), "p50": ms(pct(growth_lat, 50)),
                           "p99": ms(pct(growth_lat, 99)), "max": ms(max(growth_lat, default=None))},
        "single_post_ms": {"p50": ms(pct(singles, 50)), "p99": ms(pct(singles, 99)), "max": ms(max(singles))},
        "entries": entries, "generation": generation, "table_file_bytes": file_bytes,
        "memory_run_kb": run1,
        "shutdown_seconds": round(shutdown_s, 2),
        "restart_seconds": round(restart_s, 3),
        "restart_reopened": "reopened as is" in log2,
        "restart_generation_same": generation2 == generation,
        "restart_entries_same": entries2 == entries,
        "memory_restart_kb": run2,
        "loadavg_end": os.getloadavg(),
    })
    out = a.out or os.path.join(ROOT, "benches/results", f"scale-{n}.json")
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    mb = lambda kb: f"{kb / 1024:.0f} MB"
    print(json.dumps(result, indent=1))
    print(f"\n| hosts | import | slowest batch | engine pause for a growth | POST during growth p99 / max "
          f"| single POST p99 / max | writer anon peak | file-backed peak | restart (peak anon) |")
    print(f"| {n:,} | {import_s:.1f} s ({n / import_s / 1000:.0f}k/s) | {max(batches) * 1000:.0f} ms "
          f"| {result['engine_growth_pause_max_ms']} ms "
          f"| {result['growth_post_ms']['p99']} / {result['growth_post_ms']['max']} ms "
          f"| {result['single_post_ms']['p99']} / {result['single_post_ms']['max']} ms "
          f"| {mb(run1['peak_kb']['RssAnon'])} | {mb(run1['peak_kb']['RssFile'])} "
          f"| {restart_s:.2f} s ({mb(run2['peak_kb']['RssAnon'])}) |")
    if probe is not None:
        pr = result["probe"]
        print(f"\nbeside it, during the growths: a 10 ms sleep woke up to {pr['late_ms']['max']} ms late "
              f"(p99 {pr['late_ms']['p99']}), a 4 KiB write + fdatasync took up to "
              f"{pr['fdatasync_ms']['max']} ms (p99 {pr['fdatasync_ms']['p99']})")
        calm = pr["posts_over_50ms_probe_calm"]
        print(f"  POSTs over 50 ms: {pr['posts_over_50ms']}; while the probe waited less than half "
              f"as long: {calm['count']} (max {calm['max_ms']} ms)")
        for w in pr["worst_posts"][:3]:
            print(f"  POST of {w['post_ms']} ms at {w['at']}: the probe meanwhile late by up to "
                  f"{w['probe_late_max_ms']} ms, fdatasync up to {w['probe_fdatasync_max_ms']} ms")
    if not a.keep:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
