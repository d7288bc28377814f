"""Paths, ports and naming shared by every part of the benchmark."""

import os
import shutil
import sys
import time

# benches/e2e: the configuration templates (conf/) and wrk scripts (wrk/) live there.
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
SET_PORTS = UP_PORTS[:2]  # the 2-backend set of the "sets" contenders (and of keepalive-2)
STATUS_PORT = BASE_PORT + 5  # the upstream's stub_status (connections accepted, requests)
CONTENDER_PORTS = BASE_PORT + 10  # the first contender's port; the others follow
WRITER_PORT = BASE_PORT + 50
WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


def host_name(i):
    return f"site{i}.bench.example"


def backend_port(i):
    return UP_PORTS[i % 4]


def loadavg():
    return os.getloadavg()[0]
