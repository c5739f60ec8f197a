# otelpipe: `make run` runs the daemon on its embedded default config; `make test` runs the whole suite.
# Both do their own set-up on a fresh machine (virtualenv, Python deps, Debian's prometheus for promtool).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test setup system-deps bench lint clean docker

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(STAMP): pyproject.toml setup.py processors/privacy/_wirewalk.c processors/privacy/_hsscan.c processors/privacy/_matches.h \
          connectors/genai_metrics/_genaiwire.c exporters/datadog/_ddwire.c exporters/pagerduty/_pdwire.c exporters/loki/_lokiwire.c \
          pipeline/_otlpwire.h
	@# Debian/Ubuntu ship `python3 -m venv` in a separate package.
	@$(PYTHON) -c "import ensurepip, venv" 2>/dev/null || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends python3-venv >/dev/null; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

# promtool and a real Prometheus server for the exposition tests (Debian package `prometheus`; the
# service the package starts is stopped and disabled: the tests run their own servers), openssl for
# the TLS test certificates, chromium for the status page test in a real headless browser, and on
# amd64 libhyperscan-dev, so that `setup` builds processors/privacy/_hsscan.c (secret_mask's scan
# without Python callbacks; optional elsewhere).
HS_PKG := $(shell [ "$$(dpkg --print-architecture 2>/dev/null)" = amd64 ] && echo libhyperscan-dev)

system-deps:
	@if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1 \
	    || ! command -v openssl >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1 \
	    || { [ -n "$(HS_PKG)" ] && [ ! -f /usr/include/hs/hs.h ]; }; then \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
	    prometheus openssl chromium $(HS_PKG) >/dev/null; \
	  { $(SUDO) systemctl disable --now prometheus || $(SUDO) service prometheus stop; } >/dev/null 2>&1 || true; \
	fi

run: setup
	$(VENV)/bin/otelpipe run

# ruff and mypy --strict over the distribution and the component packages; vulture for dead code in them
# (tests and benchmarks count as users; tests/vulture_allowlist.py lists, with the reason, what only
# looks unused: protocol members, config keys read by name).
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	@out=$$($(VENV)/bin/vulture otelpipe pipeline receivers processors exporters connectors extensions tests bench \
	        tests/vulture_allowlist.py --min-confidence 60 | grep -v '^tests/\|^bench/'); \
	 if [ -n "$$out" ]; then echo "$$out"; echo "vulture: unused code above (remove it, or allow it in tests/vulture_allowlist.py with the reason)"; exit 1; fi

test: system-deps setup lint
	$(PY) -m pytest -q

bench: setup
	$(PY) -m pip install -q rotel
	$(PY) bench/run_otlp_bench.py

docker:
	docker build -t otelpipe .

clean:
	rm -rf $(VENV) build *.egg-info
