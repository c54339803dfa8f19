# grantd: one command to run, one command to test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-db install migrate clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## Serve on http://127.0.0.1:8000 with the embedded SQLite database under ./var/
run: $(STAMP)
	$(BIN)/grantd migrate
	$(BIN)/grantd serve

migrate: $(STAMP)
	$(BIN)/grantd migrate

## The whole suite (PostgreSQL tests run where PostgreSQL answers on 127.0.0.1:5432)
test: $(STAMP)
	$(BIN)/pytest -q $(PYTEST_ARGS)

## The database tests once more, against PostgreSQL
test-db: $(STAMP)
	GRANTD_TEST_DB=postgres $(BIN)/pytest -q -m db $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache
