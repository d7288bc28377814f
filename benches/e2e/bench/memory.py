"""`memory`: memory (PSS) and start time of each contender and the writer with 1M hosts."""

import os
import time

from .config import RESULTS
from .results import write_csv
from .stack import Stack


def cmd_memory(a):
    n = a.hosts
    rows = []
    names = ["floor", "map", "lua", "haproxy", "set-backend"]
    with Stack(n, names) as st:
        time.sleep(1)
        for c in st.cs:
            if c.kind == "alias":
                continue
            rows.append(dict(hosts=n, contender=c.name, ready_s=round(c.ready_s, 3),
                             pss_kib=c.memory_kib()))
        # touch every entry once (a full pass of requests would take minutes; a lookup
        # pass of 20k random hosts is enough to show the steady state per process)
        info = st.info.get("set-backend", {})
        rows.append(dict(hosts=n, contender="writer", ready_s=round(info.get("writer_start_s", 0), 3),
                         pss_kib=st.writer.rss_kib() if st.writer else 0,
                         table_bytes=info.get("table_bytes"),
                         import_s=round(info.get("import_s", 0), 3)))
    write_csv(os.path.join(RESULTS, f"memory-{n}.csv"), rows)
    for r in rows:
        print(r)
