# Two commands do all set-up: `make demo` runs the pipeline on the embedded default,
# `make test` runs the tests. Both create .venv and install what is missing, idempotently.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STORE ?= bonmf-demo/store

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q pip==26.3
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/bonmf-pipe demo --out bonmf-demo

test: $(STAMP)
	$(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "no tests were collected: failing"; exit 1; fi; exit $$rc

bench: $(STAMP)
	$(BIN)/python -m benchmarks --quick

clean:
	rm -rf bonmf-demo .pytest_cache
