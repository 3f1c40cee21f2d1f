# One command each: `make run` (demo cluster on SQLite), `make test`, `make lint`, `make bench`.
# Every target builds the virtual environment itself on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup setup-bench setup-chaos run test test-fast lint bench bench-retention chaos soak docs screenshots fuzz fuzz-membership clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,lint]'
	touch $(STAMP)

# The benchmark peers (huey, procrastinate, kinship, swim-protocol, psycopg) and
# matplotlib (the plots) are only for `make bench`: not part of the default install.
BENCH_STAMP := $(VENV)/.installed-bench
setup-bench: $(BENCH_STAMP)

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,lint,bench]'
	touch $(BENCH_STAMP)

# matplotlib (the soak's PNG) is only for `make soak`: not part of the default install.
setup-chaos: setup
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,lint,chaos]'

run: setup
	$(BIN)/relaymesh demo

test: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not chaos"

test-fast: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not slow and not chaos"

lint: setup
	$(BIN)/ruff check relaymesh tests bench tools
	$(BIN)/ruff format --check relaymesh
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: setup-bench
	$(BIN)/python -m bench.run_all

# Drain speed with 1,000,000 finished steps in the store vs an empty one (both stores;
# also part of `make bench`, as the retention_bigstore suite).
bench-retention: setup-bench
	$(BIN)/python -m bench.run_all --only retention_bigstore

# The long failure scenarios (tests/chaos/README.md, docs/reliability.md); the soak is
# separate (`make soak`, 30 minutes). The short host scenario runs in `make test`.
chaos: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider -m chaos tests/chaos -k "not soak"

SOAK_OUT ?= soak-samples.jsonl
soak: setup-chaos
	RELAYMESH_SOAK_OUT=$(abspath $(SOAK_OUT)) $(BIN)/python -m pytest -q -p no:cacheprovider \
		-m chaos tests/chaos/test_hosts.py -k soak
	$(BIN)/python -m tests.chaos.plot_soak $(SOAK_OUT) docs/reliability-soak.png

docs: setup
	$(BIN)/python tools/gen_reference.py

# The console's browser tests (headless Chromium), keeping their screenshots for the
# README in docs/img/.
screenshots: setup
	RELAYMESH_REQUIRE_BROWSER=1 RELAYMESH_SCREENSHOT_DIR=$(abspath docs/img) \
		$(BIN)/python -m pytest -q -p no:cacheprovider tests/e2e/test_console_browser.py

# Long fuzz runs (bounded: examples per target). `make test` runs the same targets briefly.
# Decoders (datagram, push/pull), keyring and replay window, workflow parser: hypothesis
# with 40x the examples of `make test` (tests/fuzzing.py), ~10 min on 2 cores.
FUZZ_TARGETS := tests/unit/membership/test_wire.py tests/unit/membership/test_keyring_fuzz.py \
	tests/unit/work/test_workflow_fuzz.py
fuzz: setup fuzz-membership
	RELAYMESH_FUZZ=1 $(BIN)/python -m pytest -q -p no:cacheprovider -o timeout=900 $(FUZZ_TARGETS)
	RELAYMESH_FUZZ_EXAMPLES=200 $(BIN)/python -m pytest -q -p no:cacheprovider tests/integration/web/test_schemathesis.py

# The membership stateful fuzz test with many examples (bounded: ~10 min on 2 cores);
# `make test` runs a few seconds of it.
fuzz-membership: setup
	RELAYMESH_FUZZ=1 $(BIN)/python -m pytest -q -p no:cacheprovider -o timeout=900 \
		tests/unit/membership/test_adversarial_stateful.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
