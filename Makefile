# otelpipe: `make run` runs the daemon on its embedded default config; `make test` runs the whole suite.
# Both do their own set-up on a fresh machine (virtualenv, Python deps, Debian's prometheus for promtool).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test setup system-deps bench lint clean docker

$(STAMP): pyproject.toml setup.py processors/_wirewalk.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

# promtool and a real Prometheus server for the exposition tests (Debian package `prometheus`),
# openssl for the TLS test certificates.
system-deps:
	@if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1 \
	    || ! command -v openssl >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
	    prometheus openssl >/dev/null; \
	fi

run: setup
	$(VENV)/bin/otelpipe run

test: setup system-deps
	$(PY) -m pytest -q

bench: setup
	$(PY) -m pip install -q rotel
	$(PY) bench/run_otlp_bench.py

docker:
	docker build -t otelpipe .

clean:
	rm -rf $(VENV) build *.egg-info
