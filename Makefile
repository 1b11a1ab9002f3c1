# The two commands of the README. Both make .venv and install what they need first: `demo`
# only what the daemon needs, `test` the test tools as well.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SUM    := $(shell cksum pyproject.toml | cut -d' ' -f1)
RUN    := $(VENV)/.installed-run-$(SUM)
TEST   := $(VENV)/.installed-test-$(SUM)

.PHONY: demo test lint bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit("pbxlink needs Python 3.11 or newer, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)

$(RUN): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@rm -f $(VENV)/.installed-run-* && touch $@

$(TEST): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $@ $(RUN)

demo: $(RUN)  ## the daemon with its defaults: SQLite, and the simulator playing real calls
	@echo "pbxlink: the operator page's link follows (web on 127.0.0.1:8080, popups on 8081); Ctrl-C stops it"
	$(BIN)/pbxlink run

test: $(TEST)  ## lint, then every test (the real traces are shipped in tests/traces)
	$(BIN)/ruff check pbxlink tests benchmarks
	$(BIN)/python -m pytest

bench: $(TEST)  ## the tracker benchmark of docs/benchmarks.md
	$(BIN)/python benchmarks/tracker.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis *.egg-info
