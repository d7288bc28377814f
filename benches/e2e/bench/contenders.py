"""The contenders: the front servers under test, how each is configured, started, probed and
stopped. To add one, add a line to `lineup()` (and its template to conf/)."""

import glob
import os
import random
import shutil
import signal
import socket
import ssl
import string
import subprocess
import time

from .config import (CONTENDER_PORTS, DEBIAN_NGINX, HAPROXY, HERE, ROOT, RUN, SET_PORTS, TARGET,
                     UP_PORTS, WORKERS, backend_port, host_name, log)
from .procs import (Proc, http_get, make_nginx_prefix, nginx_argv, pss_kib, user_line,
                    wait_until)

# --- the builds (benches/e2e/build.sh) --------------------------------------------------------


def vendored_nginx():
    c = sorted(glob.glob(os.path.join(TARGET, "release/build/nginx-sys-*/out/objs/nginx")),
               key=os.path.getmtime)
    return c[-1] if c else None


def module_so(flavor):
    if flavor == "1.28":
        return os.path.join(TARGET, "release/libngx_http_set_backend_module.so")
    return os.path.join(TARGET, "debian-nginx/release/libngx_http_set_backend_module.so")


def writer_bin():
    return os.path.join(TARGET, "release/set-backend")


def module_has_peer():
    """The upstream mode exists when the module source defines the set_backend_peer directive."""
    try:
        out = subprocess.run(["grep", "-rqs", "set_backend_peer", os.path.join(ROOT, "module/src")])
        return out.returncode == 0
    except OSError:
        return False


# --- configuration templates (conf/) ----------------------------------------------------------


def render(template, out, **kw):
    """conf/TEMPLATE with ${…} substituted, ${common}, ${http} and ${tls} being conf/*.inc."""

    def sub(text, extra):
        return string.Template(text).safe_substitute({**kw, **extra})

    inc = {name: sub(open(os.path.join(HERE, f"conf/{name}.inc")).read(), {})
           for name in ("common", "http", "tls")}
    text = sub(open(os.path.join(HERE, "conf", template)).read(), inc)
    with open(out, "w") as f:
        f.write(text)


def tls_files():
    """The certificate of the HTTPS contenders, made once: an ECDSA P-256 key and a
    self-signed certificate for *.bench.example (cert.pem, key.pem; haproxy.pem is both in one
    file, as HAProxy takes them). One certificate for all, so the handshakes cost the same."""
    d = os.path.join(RUN, "tls")
    if os.path.exists(os.path.join(d, "haproxy.pem")):
        return d
    os.makedirs(d, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", f"{d}/key.pem",
                    "-subj", "/CN=*.bench.example", "-addext",
                    "subjectAltName=DNS:*.bench.example,IP:127.0.0.1", "-days", "30",
                    "-out", f"{d}/cert.pem"], check=True, capture_output=True)
    with open(f"{d}/haproxy.pem", "w") as f:
        f.write(open(f"{d}/cert.pem").read() + open(f"{d}/key.pem").read())
    return d


# The protocol and cipher suite every HTTPS contender is configured with (conf/tls.inc,
# conf/haproxy-tls.cfg), checked before measuring.
TLS_CIPHER = ("TLS_AES_128_GCM_SHA256", "TLSv1.3")


def tls_cipher(port):
    """(cipher, protocol, bits) that a default client negotiates with 127.0.0.1:PORT."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        with ctx.wrap_socket(s) as t:
            return t.cipher()


# --- one contender ----------------------------------------------------------------------------


class Contender:
    """A front server under test. `kind`: "nginx", "haproxy", or "alias" (a second port of
    another contender's process, `alias`). `group`: "close" = one upstream connection per request
    (what any variable proxy_pass does), "keepalive" = upstream connections reused."""

    def __init__(self, name, label, group, kind, template=None, binary=None, module=None,
                 port=None, note=""):
        self.name, self.label, self.group, self.kind = name, label, group, kind
        self.template, self.binary, self.module = template, binary, module
        self.port, self.note = port, note
        self.proc = None
        self.alias = None  # kind "alias": the contender whose process serves this one
        self.api_port = None  # lua update endpoint
        self.close_port = None  # HAProxy frontend without upstream keepalive
        self.target_port = port  # where wrk goes
        # the fixed-destination baselines
        self.routed = name not in ("floor", "keepalive", "keepalive-tls", "keepalive-2")
        self.sets = False  # its table routes every host to the 2-backend set SET_PORTS
        self.upstream_mode = False  # needs set_backend_peer in the module
        self.tls = False  # an HTTPS front (conf/tls.inc, tls_files()); wrk uses https://
        self.enabled = True

    def prefix(self, n):
        return os.path.join(RUN, f"{self.name}-{n}")

    def start(self, n, data, table=None):
        prefix = self.prefix(n)
        if os.path.exists(prefix):
            shutil.rmtree(prefix)
        make_nginx_prefix(prefix)
        kw = dict(
            prefix=prefix, data=data, workers=WORKERS, user_line=user_line(), port=self.port,
            up0=UP_PORTS[0], up1=UP_PORTS[1], up2=UP_PORTS[2], up3=UP_PORTS[3],
            map_hash_max_size=max(1024, 2 * n),
            lua_dict_size=f"{max(16, n * 400 // 1_000_000 + 16)}m",
            api_port=self.api_port, close_port=self.close_port, module=self.module, table=table,
            tls_dir=tls_files() if self.tls else "",
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
            self.proc = Proc(self.name, nginx_argv(self.binary, prefix, cfg), prefix)
        self.t0 = time.monotonic()
        self.proc.start()

    def answers(self, i):
        """What host i may answer: its backend's port, or either port of the 2-backend set."""
        return {str(p) for p in SET_PORTS} if self.sets else {str(backend_port(i))}

    def wait_ready(self, sample, timeout=300):
        """Until a sample host answers with its backend's port; returns the seconds since start."""
        host, i = sample

        def ready():
            st, body = http_get(self.port, host, tls=self.tls)
            return st == 200 and (body in self.answers(i) or not self.routed)

        return wait_until(ready, self.proc, self.name, timeout, self.t0)

    def check(self, n):
        """A few random hosts must reach their own backend (the routing is real); an HTTPS
        front must negotiate the benchmark's one protocol and cipher suite."""
        if self.tls:
            got = tls_cipher(self.port)
            if got[:2] != TLS_CIPHER:
                raise RuntimeError(f"{self.name}: TLS {got}, want {TLS_CIPHER}")
        if not self.routed:
            return
        for i in random.sample(range(n), min(n, 20)):
            for port in {self.target_port, self.port}:
                try:
                    st, body = http_get(port, host_name(i), timeout=10.0, tls=self.tls)
                except OSError:  # a stalled machine: once more
                    st, body = http_get(port, host_name(i), timeout=30.0, tls=self.tls)
                if st != 200 or body not in self.answers(i):
                    raise RuntimeError(
                        f"{self.name}: {host_name(i)} → {st} {body!r}, want {self.answers(i)}"
                    )

    def memory_kib(self):
        return pss_kib(self.proc.p.pid) if self.proc and self.proc.alive() else 0

    def stop(self):
        if self.proc:
            # nginx: QUIT (graceful); HAProxy: USR1 (soft stop)
            self.proc.stop(signal.SIGUSR1 if self.kind == "haproxy" else signal.SIGQUIT)


# --- the line-up ------------------------------------------------------------------------------


class Lineup:
    """Contenders in order (the order of the rounds and of the report), each with its own ports
    on 127.0.0.1, handed out in turn."""

    def __init__(self):
        self.cs = []
        self.next_port = CONTENDER_PORTS

    def _port(self):
        self.next_port += 1
        return self.next_port - 1

    def add(self, name, label, group, kind, template, binary, module=None, api_port=False,
            close_port=False, upstream_mode=False, tls=False, sets=False):
        """`api_port`: a second port for an update endpoint (${api_port} in the template);
        `close_port`: a second frontend without upstream keep-alive (${close_port});
        `upstream_mode`: left out when the module has no set_backend_peer; `tls`: an HTTPS
        front; `sets`: routed by the table of 2-backend sets (every host to SET_PORTS)."""
        c = Contender(name, label, group, kind, template, binary, module=module, port=self._port())
        c.upstream_mode = upstream_mode
        c.tls = tls
        c.sets = sets
        if api_port:
            c.api_port = self._port()
        if close_port:
            c.close_port = self._port()
        self.cs.append(c)
        return c

    def add_alias(self, name, label, group, of, port):
        """A contender served by another one's process on another of its ports."""
        c = Contender(name, label, group, "alias", port=port)
        c.alias = of
        self.cs.append(c)
        return c


def lineup():
    """Every contender, in the order they run."""
    deb, ven = DEBIAN_NGINX, vendored_nginx()
    m122, m128 = module_so("1.22"), module_so("1.28")
    lu = Lineup()
    lu.add("floor", "fixed proxy_pass (1.22)", "close", "nginx", "floor.conf", deb)
    lu.add("map", "nginx map (1.22)", "close", "nginx", "map.conf", deb)
    lu.add("lua", "lua_shared_dict (1.22)", "close", "nginx", "lua.conf", deb, api_port=True)
    lu.add("set-backend", "set-backend (1.22)", "close", "nginx", "set-backend.conf", deb,
           module=m122)
    hap = lu.add("haproxy", "HAProxy 2.6 map", "keepalive", "haproxy", "haproxy.cfg", HAPROXY,
                 close_port=True)
    lu.add_alias("haproxy-close", "HAProxy 2.6 map, server-close", "close", hap, hap.close_port)
    lu.add("map-1.28", "nginx map (1.28)", "close", "nginx", "map.conf", ven)
    lu.add("set-backend-1.28", "set-backend (1.28, shipped)", "close", "nginx",
           "set-backend.conf", ven, module=m128)
    lu.add("keepalive", "static upstream + keepalive (1.22)", "keepalive", "nginx",
           "keepalive.conf", deb)
    lu.add("map-upstream", "map → upstream{} + keepalive (1.22)", "keepalive", "nginx",
           "map-upstream.conf", deb)
    lu.add("lua-balancer", "balancer_by_lua + lua_shared_dict + keepalive (1.22)", "keepalive",
           "nginx", "lua-balancer.conf", deb, api_port=True)
    lu.add("set-backend-peer", "set-backend upstream mode (1.22)", "keepalive", "nginx",
           "set-backend-peer.conf", deb, module=m122, upstream_mode=True)
    lu.add("set-backend-peer-1.28", "set-backend upstream mode (1.28)", "keepalive", "nginx",
           "set-backend-peer.conf", ven, module=m128, upstream_mode=True)
    # HTTPS fronts (throughput --https): one certificate, TLS 1.3 with one cipher suite.
    lu.add("set-backend-peer-tls", "set-backend upstream mode, HTTPS (1.28)", "keepalive",
           "nginx", "set-backend-peer-tls.conf", ven, module=m128, upstream_mode=True, tls=True)
    lu.add("keepalive-tls", "static upstream + keepalive, HTTPS (1.28)", "keepalive", "nginx",
           "keepalive-tls.conf", ven, tls=True)
    lu.add("haproxy-tls", "HAProxy 2.6 map, HTTPS", "keepalive", "haproxy", "haproxy-tls.cfg",
           HAPROXY, tls=True)
    # Backend sets: every host a set of the same two upstream ports, against a static block of
    # those two servers.
    lu.add("set-backend-peer-2set", "set-backend upstream mode, 2-backend sets (1.28)",
           "keepalive", "nginx", "set-backend-peer.conf", ven, module=m128, upstream_mode=True,
           sets=True)
    lu.add("keepalive-2", "static upstream of 2 servers + keepalive (1.28)", "keepalive", "nginx",
           "keepalive-2.conf", ven)
    return lu.cs


def contenders():
    """Every contender, in the order they run; `enabled` is False when its build is missing."""
    cs = lineup()
    has_peer = module_has_peer()
    for c in cs:
        c.enabled = has_peer or not c.upstream_mode
        binary_missing = c.kind != "alias" and not (c.binary and os.path.exists(c.binary))
        module_missing = c.module and not os.path.exists(c.module)
        if binary_missing or module_missing:
            if c.enabled:
                log(f"{c.name}: left out, {c.binary} or {c.module} missing (benches/e2e/build.sh)")
            c.enabled = False
    return cs
