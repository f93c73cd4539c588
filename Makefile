# fashionlens: two commands on a fresh machine
#   make demo   set everything up, then run the main job on the embedded default data
#   make test   set everything up (test extras, system packages where we can), then run the whole suite
# Both are idempotent: the venv is (re)built only when a lock file changes.

PYTHON   ?= $(shell command -v python3.11 || command -v python3)
VENV     := .venv
PY       := $(VENV)/bin/python
PIP      := $(PY) -m pip
TORCH    := torch==2.13.0
# Every pip call keeps the torch pin, else pip swaps in a multi-GB CUDA build.
export HF_HUB_OFFLINE ?= 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

SYSTEM_PACKAGES := dataset-fashion-mnist chromium

.PHONY: install install-test system-deps demo test bench clean help

help:
	@echo "make demo   - set up and run the main job on the embedded default data"
	@echo "make test   - set up (with test extras and system packages) and run all tests"
	@echo "make bench  - run the benchmarks (tables printed, JSON under benchmarks/results/)"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel setuptools

$(VENV)/.stamp-install: $(PY) requirements.lock pyproject.toml
	$(PIP) install -q $(TORCH) -r requirements.lock
	$(PIP) install -q --no-deps -e .
	@touch $@

$(VENV)/.stamp-test: $(VENV)/.stamp-install requirements-test.lock
	$(PIP) install -q $(TORCH) -r requirements-test.lock
	@touch $@

install: $(VENV)/.stamp-install

install-test: $(VENV)/.stamp-test system-deps

# System packages the tests use (Fashion-MNIST files, Chromium for the browser test); installed as root with apt where possible,
# otherwise the tests that need them skip with a visible reason.
system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing system packages:$$missing"; \
		apt-get install -y -q $$missing >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q $$missing >/dev/null) \
		|| echo "warning: could not install$$missing; tests that need them will skip"; \
	else echo "warning: not root or no apt: not installing$$missing; tests that need them will skip"; fi

demo: install
	$(VENV)/bin/fashionlens demo

# pytest exits 5 when it collected no test: that is a failure, not a pass.
test: install-test
	@$(PY) -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: an empty suite is a failure"; exit 1; fi; exit $$rc

bench: install
	$(PY) benchmarks/bench_synth.py
	$(PY) benchmarks/bench_loading.py

clean:
	rm -rf $(VENV) out .pytest_cache benchmarks/results
