"""The subcommands and their flags; `main()` runs one."""

import argparse
import os
import signal

from . import __doc__ as DOC
from .config import RUN
from .machine import cmd_machine
from .memory import cmd_memory
from .pooled import cmd_ratio
from .propagation import cmd_propagation
from .report import cmd_report
from .throughput import cmd_throughput
from .writes import cmd_writes

DEFAULT_CONTENDERS = ("floor,map,lua,set-backend,haproxy-close,map-1.28,set-backend-1.28,"
                      "keepalive,map-upstream,haproxy,set-backend-peer,set-backend-peer-1.28")
# --https: the HTTPS fronts (conf/tls.inc), in their own results (throughput-https.csv, …)
HTTPS_CONTENDERS = "set-backend-peer-tls,keepalive-tls,haproxy-tls"
# --sets: upstream mode with every host a 2-backend set against a static block of the same two
# servers, in their own results (throughput-sets.csv, …)
SETS_CONTENDERS = "set-backend-peer-2set,keepalive-2"


def parser():
    p = argparse.ArgumentParser(prog="bench.py", description=DOC,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("throughput", help="wrk against the contenders in rounds, per table size")
    t.set_defaults(run=cmd_throughput)
    t.add_argument("--sizes", default="1000,100000,1000000")
    t.add_argument("--dists", default="uniform,zipf")
    t.add_argument("--rounds", type=int, default=3)
    t.add_argument("--secs", type=int, default=5)
    t.add_argument("--warmup", type=int, default=1)
    t.add_argument("--conns", type=int, default=32)
    t.add_argument("--contenders", default=DEFAULT_CONTENDERS)
    t.add_argument("--skip-1m", default="", help="contenders left out above 100k hosts")
    t.add_argument("--tag", default="", help="results in throughput-TAG.csv, … (keeps the main run's)")
    t.add_argument("--https", action="store_true",
                   help=f"the HTTPS fronts ({HTTPS_CONTENDERS}) instead of --contenders; "
                        "tag https unless --tag")
    t.add_argument("--sets", action="store_true",
                   help=f"the backend-set fronts ({SETS_CONTENDERS}) instead of --contenders; "
                        "tag sets unless --tag")
    pr = sub.add_parser("propagation", help="write ack → every worker routes it; map + reload")
    pr.set_defaults(run=cmd_propagation)
    pr.add_argument("--hosts", type=int, default=1000)
    pr.add_argument("--updates", type=int, default=1000)
    pr.add_argument("--reloads", type=int, default=1000)
    pr.add_argument("--load-secs", type=int, default=15)
    pr.add_argument("--conns", type=int, default=32)
    w = sub.add_parser("writes", help="write throughput through each update API")
    w.set_defaults(run=cmd_writes)
    w.add_argument("--hosts", type=int, default=100000)
    w.add_argument("--secs", type=int, default=5)
    w.add_argument("--reload-count", type=int, default=20)
    m = sub.add_parser("memory", help="memory and start time of each contender")
    m.set_defaults(run=cmd_memory)
    m.add_argument("--hosts", type=int, default=1000000)
    r = sub.add_parser("ratio", help="capacity of A ÷ B over the rounds of throughput runs, "
                       "with a bootstrap interval")
    r.set_defaults(run=cmd_ratio)
    r.add_argument("--tags", default="sets", help="runs, comma-separated (\"\" the main run)")
    r.add_argument("--a", default="set-backend-peer-2set")
    r.add_argument("--b", default="keepalive-2")
    r.add_argument("--hosts", type=int, default=1000)
    sub.add_parser("machine", help="benches/results/machine.json").set_defaults(run=cmd_machine)
    sub.add_parser("report", help="benches/results/report.md").set_defaults(run=cmd_report)
    return p


def main(argv=None):
    a = parser().parse_args(argv)
    if getattr(a, "https", False):
        a.contenders, a.tag = HTTPS_CONTENDERS, a.tag or "https"
    if getattr(a, "sets", False):
        a.contenders, a.tag = SETS_CONTENDERS, a.tag or "sets"
    # TERM / HUP (timeout, a closed terminal) unwind like Ctrl-C, so the servers are stopped
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    os.makedirs(RUN, exist_ok=True)
    a.run(a)
