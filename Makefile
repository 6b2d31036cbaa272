# Tasks for working on Ostinato. `make help` lists them.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

# What the tests need from Debian (or Ubuntu):
# jackd2 + jack-midi-clock: a real JACK server (dummy driver) for the MIDI tests;
# rt-tests: cyclictest, the OS wake-up floor `ostinato bench --realtime` reports;
# xvfb, xauth and the X/GL libraries Qt's xcb platform loads: the panel's tests open a real
# window; systemd (systemd-analyze) and desktop-file-utils check the files in packaging/;
# iproute2 + util-linux (ip, unshare): the Ableton Link tests run in a private network namespace.
DEBIAN_PACKAGES = jackd2 jack-midi-clock rt-tests \
  xvfb xauth libegl1 libgl1 libfontconfig1 libdbus-1-3 libxkbcommon-x11-0 libxcb-cursor0 \
  libxcb-icccm4 libxcb-keysyms1 libxcb-shape0 libxcb-xinerama0 libxcb-randr0 \
  libxcb-render-util0 libxcb-image0 \
  systemd desktop-file-utils iproute2 util-linux

.PHONY: help install deps debian-deps test lint format check corpus

help:  ## list the tasks
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

install:  ## install the package (daemon, panel and offline tools, no torch)
	$(PIP) install '.[gui]'

debian-deps:  ## install the Debian packages the tests need, those missing (sudo when not root)
	@if ! command -v dpkg >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then \
	  echo "make debian-deps: not a Debian system; install by hand: $(DEBIAN_PACKAGES)"; \
	  exit 0; \
	fi; \
	missing=""; \
	for p in $(DEBIAN_PACKAGES); do \
	  dpkg -s "$$p" 2>/dev/null | grep -q '^Status: install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then echo "make debian-deps: every Debian package is installed"; exit 0; fi; \
	sudo=""; \
	if [ "$$(id -u)" != 0 ]; then \
	  if ! command -v sudo >/dev/null 2>&1; then \
	    echo "make debian-deps: missing:$$missing (run as root, or install sudo)" >&2; exit 1; \
	  fi; \
	  sudo=sudo; \
	fi; \
	echo "make debian-deps: installing$$missing"; \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing

deps: debian-deps  ## debian-deps, then the Python extras (test, train, gui) in editable mode
	$(PIP) install -q -e '.[test,train,gui]'

test: deps lint  ## set up this machine (deps), lint, and run the whole test suite
	$(PYTHON) -m pytest

lint:  ## ruff lint and format check only
	$(PYTHON) -m ruff check . && $(PYTHON) -m ruff format --check .

check:  ## the type checker (mypy) on the package
	$(PYTHON) -m mypy

format:  ## apply ruff fixes and formatting
	$(PYTHON) -m ruff check --fix . && $(PYTHON) -m ruff format .

corpus:  ## build the drum corpus from the shared Groove MIDI Dataset
	ostinato data build ../shared/data/groove-midi build/corpus/groove
