# The two commands of the README. Both make .venv and install what they need first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("pbxlink needs Python 3.11 or newer, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $@

demo: $(STAMP)  ## the daemon with its defaults: SQLite, and the simulator playing real calls
	@echo "pbxlink: the operator page's link follows (web on 127.0.0.1:8080, popups on 8081); Ctrl-C stops it"
	$(BIN)/pbxlink run

test: $(STAMP)  ## lint, then every test (the real traces are read from ../shared/traces)
	$(BIN)/ruff check pbxlink tests benchmarks
	$(BIN)/python -m pytest

bench: $(STAMP)  ## the tracker benchmark of docs/benchmarks.md
	$(BIN)/python benchmarks/tracker.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis *.egg-info
