# set-backend — `make help` lists the targets.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: help deps build test bench run lint fmt clean fuzz soak

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

deps: ## Debian packages of the build and the tests: installed as root, else the apt-get line to run (scripts/deps.sh)
	./scripts/deps.sh

build: deps ## Build everything (nginx from the nginx-src crate, the module, the writer)
	$(CARGO) build --workspace

test: deps ## Run every test: unit, property, loom, multi-process, end to end with real nginx
	$(CARGO) build --workspace
	$(CARGO) test --workspace -- --test-threads=2
	RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 $(CARGO) test -p shm-layout --lib --release --target-dir target/loom -- loom

bench: bench-criterion bench-e2e ## Every benchmark: bench-criterion, then bench-e2e (end to end, about 1 h; BENCHMARKS.md)

.PHONY: bench-criterion bench-deps bench-build bench-e2e bench-throughput bench-https bench-sets bench-propagation bench-writes bench-memory bench-plots
BENCH_PYTHON ?= /usr/bin/python3
BENCH_E2E := $(BENCH_PYTHON) benches/e2e/bench.py
# End-to-end knobs: table sizes, rounds (A B C …, A B C …), seconds per wrk run.
BENCH_SIZES ?= 1000,100000,1000000
BENCH_ROUNDS ?= 5
BENCH_SECS ?= 3

bench-criterion: deps ## The criterion benchmarks: table lookups, writer API (no nginx)
	$(CARGO) bench -p set-backend-benches

bench-deps: ## Install (as root) or list the Debian packages of the end-to-end benchmarks
	benches/e2e/deps.sh

bench-build: bench-deps ## Release builds for the end-to-end benchmarks in target-bench/ (1.28 and Debian's 1.22)
	benches/e2e/build.sh

bench-e2e: bench-build ## End to end: throughput, propagation, writes, memory, then plots
	$(BENCH_E2E) machine
	$(BENCH_E2E) throughput --sizes $(BENCH_SIZES) --rounds $(BENCH_ROUNDS) --secs $(BENCH_SECS)
	$(BENCH_E2E) propagation
	$(BENCH_E2E) propagation --hosts 1000000 --reloads 30 --load-secs 20
	$(BENCH_E2E) writes
	$(BENCH_E2E) memory
	$(BENCH_E2E) report >/dev/null
	$(BENCH_PYTHON) benches/e2e/plot.py

bench-throughput: bench-build ## wrk: nginx map, lua, HAProxy, set-backend, … in rounds (BENCH_SIZES, BENCH_ROUNDS, BENCH_SECS)
	$(BENCH_E2E) machine
	$(BENCH_E2E) throughput --sizes $(BENCH_SIZES) --rounds $(BENCH_ROUNDS) --secs $(BENCH_SECS)

bench-https: bench-build ## wrk over HTTPS at 1k hosts: set-backend upstream mode, static upstream + keepalive, HAProxy (BENCH_ROUNDS, BENCH_SECS)
	$(BENCH_E2E) throughput --https --sizes 1000 --rounds $(BENCH_ROUNDS) --secs $(BENCH_SECS)

bench-sets: bench-build ## wrk at 1k hosts: upstream mode with 2-backend sets against a static upstream {} of the same two servers (BENCH_ROUNDS, BENCH_SECS)
	$(BENCH_E2E) throughput --sets --sizes 1000 --rounds $(BENCH_ROUNDS) --secs $(BENCH_SECS)

bench-propagation: bench-build ## Write ack → every worker routes it: set-backend, lua, HAProxy, map + reload (1k and 1M hosts)
	$(BENCH_E2E) propagation
	$(BENCH_E2E) propagation --hosts 1000000 --reloads 30 --load-secs 20

bench-writes: bench-build ## Write throughput through each contender's update API
	$(BENCH_E2E) writes

bench-memory: bench-build ## Memory and start time with 1M hosts
	$(BENCH_E2E) memory

bench-plots: ## PNG plots and benches/results/report.md (every table of the runs) from benches/results/
	$(BENCH_E2E) report >/dev/null
	$(BENCH_PYTHON) benches/e2e/plot.py

.PHONY: bench-fleet
FLEET_WRITES ?= 1000
FLEET_HOSTS ?= 1000000
bench-fleet: ## Fleet mode: write on node A → routed by node B (FLEET_WRITES), FLEET_HOSTS hosts in etcd, bootstrap, restart (benches/fleet/fleet.py)
	SKIP_DEBIAN=1 benches/e2e/build.sh
	$(BENCH_PYTHON) benches/fleet/fleet.py --writes $(FLEET_WRITES) --hosts $(FLEET_HOSTS)

.PHONY: bench-scale
SCALE_HOSTS ?= 1000000
bench-scale: ## The writer at SCALE_HOSTS hosts (1M; 10M with SCALE_HOSTS=10000000): import, writes during growth, memory, restart
	$(CARGO) build --release -p set-backend-writer --target-dir target-bench
	$(BENCH_PYTHON) benches/scale/scale.py --binary target-bench/release/set-backend --hosts $(SCALE_HOSTS)

run: deps ## Build nginx + the module + the writer and run them on 127.0.0.1:8080 (MODE=upstream|variable, PORT, DOMAIN, API_TOKEN)
	./scripts/run.sh

.PHONY: fleet
fleet: deps ## A fleet on loopback: 3 etcd members and two nodes (nginx + writer) on 8080 and 8082 (PORT, ETCD_PORT, MODE, DOMAIN, API_TOKEN)
	./scripts/fleet.sh

.PHONY: container container-test
container: ## Build the release image `set-backend` from the Dockerfile (docker or podman; IMAGE=name)
	./container/build.sh

container-test: ## Build the image and test it: API, routing, error pages, users, logs, restarts, signals, size; then two containers in fleet mode on etcd
	./tests/container/test.sh
	SKIP_BUILD=1 ./tests/container/fleet.sh

lint: deps ## rustfmt and clippy, warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## Format the code
	$(CARGO) fmt --all

clean: ## Remove build outputs
	$(CARGO) clean

FUZZ_SECS ?= 120
fuzz: ## Fuzz table open + lookup for FUZZ_SECS seconds (needs nightly and cargo-fuzz)
	mkdir -p shm-layout/fuzz/corpus/open_lookup
	$(CARGO) run -q -p shm-layout --example make_table -- shm-layout/fuzz/corpus/open_lookup/seed-40 40
	cd shm-layout && $(CARGO) +nightly fuzz run open_lookup -- -max_total_time=$(FUZZ_SECS) -max_len=65536

# The soak run's knobs (RELIABILITY.md): seconds of table churn (at least 1e8 lookups),
# writer SIGKILLs in the writer's crash test and under nginx, nginx reloads and binary upgrades
# under load, random hostile tables, seconds of fuzzing.
SOAK_CHURN_SECS ?= 240
SOAK_CRASH_KILLS ?= 120
SOAK_E2E_KILLS ?= 100
SOAK_RELOADS ?= 30
SOAK_UPGRADES ?= 10
SOAK_RANDOM_TABLES ?= 40
SOAK_FUZZ_SECS ?= 600
soak: deps ## The long reliability runs of RELIABILITY.md: churn, 100+ writer kills, nginx operations under load, fuzzing (about 30 min)
	$(CARGO) build --workspace
	SB_CHURN_SECS=$(SOAK_CHURN_SECS) $(CARGO) test -p shm-layout --release --test churn -- --nocapture
	SET_BACKEND_CRASH_SECS=0 SET_BACKEND_CRASH_MIN_KILLS=$(SOAK_CRASH_KILLS) \
	  $(CARGO) test -p set-backend-writer --test process crash_test -- --nocapture
	SB_RELIABILITY_KILLS=$(SOAK_E2E_KILLS) SB_RELIABILITY_RELOADS=$(SOAK_RELOADS) \
	  SB_RELIABILITY_UPGRADES=$(SOAK_UPGRADES) SB_RELIABILITY_RANDOM_TABLES=$(SOAK_RANDOM_TABLES) \
	  $(CARGO) test -p set-backend-tests --test e2e reliability -- --nocapture --test-threads=1
	$(MAKE) fuzz FUZZ_SECS=$(SOAK_FUZZ_SECS)
