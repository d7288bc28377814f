"""`machine`: benches/results/machine.json (CPU, memory, kernel, versions, load, commit)."""

import datetime
import json
import os
import platform
import subprocess

from .config import DEBIAN_NGINX, HAPROXY, RESULTS, ROOT, WRK
from .contenders import module_has_peer


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
