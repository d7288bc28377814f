"""`ratio`: one contender's capacity against another's over every round of one or more
throughput runs: the median of the per-round ratios (B's CPU per request ÷ A's, so > 1 means A
does more with the same CPU), with a bootstrap 95% interval of that median, per distribution
and for all of them together. On a machine where one round's ratio moves ±9%, the interval is
what says whether a run settles a goal."""

import os
import random
import statistics

from .config import RESULTS
from .results import read_csv


def ratios(tags, a, b, hosts):
    """{dist: [per-round ratio]} over the runs `tags`, rounds where both contenders ran."""
    out = {}
    for tag in tags:
        sfx = f"-{tag}" if tag else ""
        rows = [r for r in read_csv(os.path.join(RESULTS, f"throughput{sfx}.csv"))
                if int(r["hosts"]) == hosts]
        cpu = {(r["dist"], r["round"], r["contender"]): float(r["cpu_us_per_req"]) for r in rows}
        for (dist, rnd, c), x in cpu.items():
            y = cpu.get((dist, rnd, b))
            if c == a and y and x > 0:
                out.setdefault(dist, []).append(y / x)
    return out


def interval(xs, draws=4000, seed=1):
    """The bootstrap 95% interval of the median of `xs`."""
    rng = random.Random(seed)
    meds = sorted(statistics.median(rng.choices(xs, k=len(xs))) for _ in range(draws))
    return meds[int(0.025 * draws)], meds[int(0.975 * draws) - 1]


def cmd_ratio(a):
    by = ratios(a.tags.split(","), a.a, a.b, a.hosts)
    groups = sorted(by.items()) + [("all", [x for xs in by.values() for x in xs])]
    print(f"capacity {a.a} ÷ {a.b}, {a.hosts} hosts, runs {a.tags}")
    for dist, xs in groups:
        if not xs:
            continue
        lo, hi = interval(xs)
        print(f"  {dist:8} {len(xs):4} rounds  median {statistics.median(xs):.3f}  "
              f"95% interval {lo:.3f}–{hi:.3f}  geometric mean {statistics.geometric_mean(xs):.3f}")
