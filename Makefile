# Tasks for working on Ostinato. `make help` lists them.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.PHONY: help install run test lint format corpus

help:  ## list the tasks
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install:  ## install the package (daemon, panel and offline tools, no torch)
	$(PIP) install '.[gui]'

test:  ## install test needs, lint, and run the whole test suite
	$(PIP) install -q -e '.[test,train,gui]'
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m pytest

lint:  ## ruff lint and format check only
	$(PYTHON) -m ruff check . && $(PYTHON) -m ruff format --check .

format:  ## apply ruff fixes and formatting
	$(PYTHON) -m ruff check --fix . && $(PYTHON) -m ruff format .

corpus:  ## build the drum corpus from the shared Groove MIDI Dataset
	ostinato data build ../shared/data/groove-midi build/corpus/groove
