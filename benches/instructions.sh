#!/usr/bin/env bash
# Instructions per hot-host lookup, counted by callgrind: the same count whatever else the
# machine is doing, so the ratio to a HashMap is stable where wall-clock time is not.
# Usage: benches/instructions.sh [N]   (needs valgrind: apt-get install valgrind)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-200000}
cargo build -q --release -p set-backend-benches --example lookup_loop
bin=target/release/examples/lookup_loop
count() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$1" "$2" 2>&1 |
    awk '/Collected :/ {print $4}'
}
base=$(count none "$n")
printf '%-14s %s\n' contender 'instructions/lookup'
for c in table hashmap hashmap-copy table-set hashmap-set exact wildcard wildcard-4-deep default; do
  total=$(count "$c" "$n")
  awk -v t="$total" -v b="$base" -v n="$n" -v c="$c" 'BEGIN { printf "%-14s %.0f\n", c, (t - b) / n }'
done
