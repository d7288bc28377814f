#!/usr/bin/env python3
"""What the machine itself does to a write, measured beside the writer by `scale.py`: every
10 ms, how late a 10 ms sleep wakes up (waiting for a CPU) and how long a 4 KiB write and
`fdatasync` of a file on the same disk take (waiting for the disk). One line per sample:
`<monotonic clock at wake-up> <lateness s> <write + fdatasync s>`. Runs until killed.
"""

import os
import sys
import time


def main():
    path, out = sys.argv[1], sys.argv[2]
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    block = os.urandom(4096)
    with open(out, "w") as f:
        while True:
            a = time.monotonic()
            time.sleep(0.01)
            b = time.monotonic()
            os.pwrite(fd, block, 0)
            os.fdatasync(fd)
            c = time.monotonic()
            f.write(f"{b:.6f} {b - a - 0.01:.6f} {c - b:.6f}\n")
            f.flush()


if __name__ == "__main__":
    main()
