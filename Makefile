# set-backend — `make help` lists the targets.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: help build test bench run lint fmt clean fuzz

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

build: ## Build everything (nginx from the nginx-src crate, the module, the writer)
	$(CARGO) build --workspace

test: ## Run every test: unit, property, loom, multi-process, end to end with real nginx
	$(CARGO) build --workspace
	$(CARGO) test --workspace -- --test-threads=2
	RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 $(CARGO) test -p shm-layout --lib --release --target-dir target/loom -- loom

bench: ## Run the criterion benchmarks (see BENCHMARKS.md)
	$(CARGO) bench -p set-backend-benches

run: ## Build nginx + the module + the writer and run them on 127.0.0.1:8080 (PORT, DOMAIN, API_TOKEN)
	./scripts/run.sh

lint: ## rustfmt and clippy, warnings as errors
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
