# grantd: one command to run, one command to test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-db test-faults install migrate clean bench bench-peers screenshots chromium

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@# Byte-code for grantd's sources (an editable install compiles none) and the venv's, as a wheel's
	@# install has it: where PYTHONDONTWRITEBYTECODE=1 forbids writing it at run time, every start
	@# would compile every module it imports again (~1.5 s of a 2.7 s cold start, measured).
	$(BIN)/python -m compileall -q -j 0 src $(VENV)/lib
	touch $(STAMP)

install: $(STAMP)

## Serve on http://127.0.0.1:8000 with the embedded SQLite database under ./var/
run: $(STAMP)
	$(BIN)/grantd serve

migrate: $(STAMP)
	$(BIN)/grantd migrate

## The whole suite (PostgreSQL tests run where PostgreSQL answers on 127.0.0.1:5432)
test: $(STAMP) interop-deps
	$(BIN)/pytest -q $(PYTEST_ARGS)

## The browser tests alone (headless Chromium against a real server), refreshing docs/screenshots/
screenshots: $(STAMP) chromium
	GRANTD_SCREENSHOTS=$(CURDIR)/docs/screenshots $(BIN)/pytest -q -m browser tests/browser $(PYTEST_ARGS)

## Debian's chromium, which the browser tests drive (no browser is downloaded by Playwright)
chromium:
	@command -v chromium >/dev/null || (apt-get install -y chromium || (apt-get update && apt-get install -y chromium))

## The database tests once more, against PostgreSQL
test-db: $(STAMP)
	GRANTD_TEST_DB=postgres $(BIN)/pytest -q -m db $(PYTEST_ARGS)

## The fault-injection suite (tests/faults/): its own PostgreSQL and redis-server, stopped, frozen
## and restarted under load, and a small full disk; see docs/operations.md
test-faults: $(STAMP)
	@# -rs: a fault test that cannot run here (no mount rights, no redis-server) says so in the summary
	$(BIN)/pytest -q -rs -m faults tests/faults $(PYTEST_ARGS)

## The npm packages of the Node.js interop tests, each from its package-lock.json: tests/interop/node
## (oauth4webapi, jose, openid-client) and tests/interop/neucron-sdk (Neucron's v1 SDK); where npm is absent, those
## tests are skipped (they need node) and this says so
.PHONY: interop-deps
INTEROP_PACKAGES := tests/interop/node tests/interop/neucron-sdk
interop-deps: $(addsuffix /node_modules/.installed,$(INTEROP_PACKAGES))

tests/interop/%/node_modules/.installed: tests/interop/%/package.json tests/interop/%/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		cd $(<D) && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	else \
		echo "npm not found: the tests of $(<D) need Node.js and npm (they are skipped where node is absent)"; \
	fi

clean:
	rm -rf $(VENV) var .pytest_cache

## The token-endpoint benchmark (BENCH_DB=postgres for PostgreSQL); writes bench/results/latest.md
bench: $(STAMP)
	@command -v wrk >/dev/null || (apt-get install -y wrk || (apt-get update && apt-get install -y wrk))
	@[ -z "$$BENCH_PY_SPY" ] || $(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python bench/run.py

## grantd (one worker) beside node-oidc-provider and the raw ASGI floor, in one run of the shared peers
## harness (PEERS_DIR; PEERS names the peers, BENCH_DB=postgres for PostgreSQL); writes
## bench/results/peers-latest.md. The harness installs wrk, its venvs and node modules under /tmp.
PEERS_DIR ?= $(CURDIR)/../shared/peers
bench-peers: $(STAMP)
	$(BIN)/python bench/peers.py --peers-dir $(PEERS_DIR)
