# The commands the README names. `make run` and `make test` each set up what they need.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
CORPUS  := data/papers.jsonl
export HF_HUB_OFFLINE := 1

.PHONY: setup run ingest serve test test-fast lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0        # the CPU build on this machine's disk; never an unpinned torch
	$(BIN)/pip install -q -e '.[all]' -c constraints.txt
	touch $@

setup: $(STAMP)

ingest: setup
	$(BIN)/rag ingest $(CORPUS)

run: ingest
	$(BIN)/rag serve        # the web chat on http://127.0.0.1:7860 (ingests data/papers.jsonl if the index is empty)

serve: setup
	$(BIN)/rag serve

test: setup
	$(BIN)/python -m pytest -q -ra --doctest-modules rag tests

test-fast: setup        # the pure logic and rag/'s doctests: no model, server or browser (tests/conftest.py marks them), < 60 s
	$(BIN)/python -m pytest -q -m fast --doctest-modules rag tests

lint: setup
	$(BIN)/ruff check rag ui eval tests
	$(BIN)/lint-imports
	$(BIN)/mypy            # rag/, ui/, eval/ ([tool.mypy] in pyproject.toml); make test runs it too

clean:
	rm -rf $(VENV) .pytest_cache
