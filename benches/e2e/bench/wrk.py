"""Running wrk with one of the scripts in wrk/ and reading the "JSON {…}" line it prints."""

import json
import os
import subprocess

from .config import HERE, WRK


def parse_wrk(stdout):
    for line in stdout.splitlines():
        if line.startswith("JSON "):
            r = json.loads(line[5:])
            r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
            r["errors"] = sum(r[k] for k in r if k.startswith("err_"))
            return r
    raise RuntimeError(f"wrk: no result: {stdout}")


def wrk(port, script, args, secs, conns, threads=1, scheme="http"):
    """wrk on SCHEME://127.0.0.1:PORT/ with wrk/SCRIPT and its arguments; the parsed result."""
    argv = [WRK, f"-t{threads}", f"-c{conns}", f"-d{secs}s", "--timeout", "5s",
            "-s", os.path.join(HERE, "wrk", script), f"{scheme}://127.0.0.1:{port}/", "--",
            *[str(a) for a in args]]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=secs + 60)
    try:
        return parse_wrk(out.stdout)
    except RuntimeError:
        raise RuntimeError(f"wrk: no result: {out.stdout} {out.stderr}") from None


def run_wrk(port, n, dist, secs, conns, threads=1, scheme="http"):
    """Requests spread over the n hosts (dist: uniform or zipf), wrk/hosts.lua; over HTTPS
    (keep-alive: one handshake per connection) with scheme "https"."""
    return wrk(port, "hosts.lua", [n, dist], secs, conns, threads, scheme)
