"""Server processes: start, stop gracefully, their CPU time and memory; a one-shot HTTP GET."""

import http.client
import os
import signal
import ssl
import subprocess
import time

from .config import log


def tree_pids(pid):
    pids = [pid]
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
        for c in out.split():
            pids += tree_pids(int(c))
    except OSError:
        pass
    return pids


def pss_kib_of(pid):
    """Pss (KiB) of one process (its shared pages split with the processes sharing them)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_kib(pid):
    """Sum of Pss (KiB) over a process and its descendants."""
    return sum(pss_kib_of(p) for p in tree_pids(pid))


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


def http_get(port, host, path="/", timeout=2.0, tls=False):
    """(status, body) of GET PATH with this Host; over HTTPS if `tls` (certificate unchecked:
    the benchmark's own)."""
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        c = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=ctx)
    else:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path, headers={"Host": host, "Connection": "close"})
        r = c.getresponse()
        return r.status, r.read().decode(errors="replace").strip()
    finally:
        c.close()


def user_line():
    return "user root root;" if os.geteuid() == 0 else ""


def nginx_argv(binary, prefix, cfg):
    return [binary, "-p", prefix, "-c", cfg, "-e", os.path.join(prefix, "error.log")]


def make_nginx_prefix(prefix):
    """A fresh nginx prefix directory with the temporary directories nginx wants."""
    for sub in ("tmp/body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi"):
        os.makedirs(os.path.join(prefix, sub), exist_ok=True)


def wait_until(ready, proc, what, timeout, t0=None):
    """Poll `ready()` (OSError: not yet) until it is true, while `proc` runs; returns the seconds
    since `t0` (default: now)."""
    t0 = time.monotonic() if t0 is None else t0
    while time.monotonic() - t0 < timeout:
        if not proc.alive():
            proc.tail()
            raise RuntimeError(f"{what} exited")
        try:
            if ready():
                return time.monotonic() - t0
        except OSError:
            pass
        time.sleep(0.02)
    proc.tail()
    raise RuntimeError(f"{what} not ready after {timeout}s")


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
