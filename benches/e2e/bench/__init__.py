"""End-to-end benchmarks of set-backend against what an nginx operator would otherwise pick.

Run as `python3 benches/e2e/bench.py SUBCOMMAND …` (or `python3 -m bench` from benches/e2e).

Layout of benches/e2e/:
  bench.py       the entry point (runs this package)
  bench/         this package, one file per concern:
    cli.py         the subcommands and their flags
    config.py      paths, ports, host names, the results directory
    procs.py       server processes, their CPU time and memory, a one-shot HTTP GET
    contenders.py  the contenders (one line each: name, configuration template, binary)
    stack.py       the upstream, the writer and the contenders of one run, started and stopped
    wrk.py         running wrk and reading its result line
    results.py     CSV files and percentiles
    throughput.py, propagation.py, writes.py, memory.py, machine.py, report.py, pooled.py:
                   the subcommands
  conf/          one configuration template per contender (nginx, HAProxy) and the upstream
  wrk/hosts.lua  wrk script spreading requests over many hosts (uniform or zipf)
  wrk/writes.lua wrk script for the write-throughput runs
  build.sh       release builds: writer, module + nginx 1.28.3, module for Debian's nginx 1.22
  deps.sh        the Debian packages (installed as root, else listed)
  plot.py        PNG plots from the CSV files this package writes

Subcommands (each runs alone; `make bench-e2e` runs them all, see the Makefile):
  throughput   wrk against every contender, in rounds (A B C, B C A, …), for each table size
               and distribution; also records each contender's start time and memory;
               --https: the HTTPS fronts (set-backend upstream mode, static keepalive, HAProxy)
  propagation  ack → every worker routes the new backend, per update API; reload under load
  writes       write throughput through each update API
  memory       memory and start time with 1M hosts (subset of throughput, no wrk)
  machine      benches/results/machine.json (CPU, kernel, versions, load, commit)
  report       benches/results/report.md: the markdown tables of every run
  ratio        one contender's capacity ÷ another's over the rounds of throughput runs, per
               distribution and pooled, with a bootstrap 95% interval of the median

Two measures of throughput: wrk's req/s (wall clock, moved by anything else on the machine)
and the proxy's CPU time per request (schedstat of all its threads), whose inverse is the
capacity when the proxy owns the CPU. Ratios are taken within a round, then their median; on
these shared machines one round's ratio moves ±9%, so a goal a few percent wide needs the
interval `ratio` gives, over many rounds.

Everything listens on 127.0.0.1 only; every run is bounded in time; nginx is stopped with QUIT
(TERM after a timeout), never KILL. Results go to benches/results/*.csv|json.
"""
