#!/usr/bin/python3
"""End-to-end benchmarks: `python3 benches/e2e/bench.py SUBCOMMAND …` runs the package bench/
next to this file (its __init__.py describes the layout and the subcommands; `--help`)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
