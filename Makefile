# The README's two commands. Both bootstrap a virtualenv in .venv with nothing but a
# Python 3.11+ on the PATH, so they work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: serve demo test docs bench clean chromium

$(BIN)/tox:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "tox>=4.22"

$(BIN)/hyperqueue-ready: pyproject.toml $(BIN)/tox
	$(BIN)/python -m pip install --quiet -e ".[server]"
	touch $@

## serve: the job server on http://127.0.0.1:8000 (demo tasks, state in ./hyperqueue.db)
serve: $(BIN)/hyperqueue-ready
	$(BIN)/hyperqueue serve

## demo: a live demo of the queue in one process, no server
demo: $(BIN)/hyperqueue-ready
	$(BIN)/python examples/demo.py

## chromium: Debian's Chromium for the dashboard's browser tests, installed with apt-get
## when /usr/bin/chromium is missing and we are root (else those tests skip, saying why)
chromium:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; \
	fi

## test: lint, type-check, run every test, on the dependency floors too, and build the docs
## (the same command CI runs)
test: $(BIN)/tox chromium
	$(BIN)/tox run -e lint,core,floors,full,docs

## docs: the docs site into docs/_build/html (Sphinx; warnings are errors)
docs: $(BIN)/tox
	$(BIN)/tox run -e docs

## bench: the benchmarks (figures go to docs/benchmarks.md by hand)
bench: $(BIN)/tox
	$(BIN)/tox run -e bench

clean:
	rm -rf $(VENV) .tox
