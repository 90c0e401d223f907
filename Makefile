# clipfeed: two commands set everything up.
#   make run   - virtualenv, Python + npm packages, migrations, demo content, serve on :8000
#   make test  - install, then the whole suite (SQLite; plus PostgreSQL + Redis when present / CI)

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
WEB    := clipfeed/web/static/vendor/hls.min.js

export OPENBLAS_NUM_THREADS ?= 1

.PHONY: install run serve test test-fast bench chromium web clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

$(WEB): package.json package-lock.json scripts/build_web.mjs
	npm ci --no-audit --no-fund --loglevel=error
	node scripts/build_web.mjs

web: $(WEB)

install: $(STAMP) $(WEB)

run: install
	$(BIN)/clipfeed migrate
	$(BIN)/clipfeed serve --demo

serve: install
	$(BIN)/clipfeed serve

# Debian's chromium drives the browser tests (never a downloaded browser build).
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "note: /usr/bin/chromium is missing and this is not root: browser tests will be skipped"; \
	  fi; \
	fi
	@# nginx with the RTMP module runs the shipped deploy/nginx-rtmp.conf in the live tests.
	@if [ ! -e /usr/sbin/nginx ] || ! ls /usr/lib/nginx/modules/ 2>/dev/null | grep -q rtmp; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light libnginx-mod-rtmp >/dev/null; \
	  fi; \
	fi

test: install chromium
	$(BIN)/python -m pytest -p no:cacheprovider -q -rfEs $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -q -m "not browser and not slow" $(PYTEST_ARGS)

bench: install
	$(BIN)/clipfeed bench all

clean:
	rm -rf $(VENV) node_modules clipfeed/web/static/vendor data test-artifacts
