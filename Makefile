# coral-ebpf: the README's two commands are `make install` and `make test` (run as root).
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV      ?= .venv
PYTHON    := /usr/bin/python3
VENV_BIN  := $(VENV)/bin
ARCH      := $(shell dpkg --print-architecture 2>/dev/null || echo amd64)
KREL      := $(shell uname -r)

# Debian packages the agent and its tests need. python3-bpfcc is BCC (import name `bcc`);
# the PyPI project called `bcc` is unrelated and never installed.
DEB_PACKAGES := python3 python3-venv python3-dev python3-bpfcc bpftool iproute2 procps util-linux
# Tools only the host's tests and lint use: a real Prometheus (scrape + PromQL), a headless browser (the
# web view), the BPF C formatter, debootstrap (the clean root the .deb test installs into), pyfuse3 (the
# failing-disk file system of the spool EIO test). The VM images take DEB_PACKAGES only (their suites are the
# kernel tests).
HOST_TEST_PACKAGES := prometheus chromium clang-format debootstrap debian-archive-keyring python3-pyfuse3

.PHONY: help install system-deps venv test lint docs typecheck unit integration vm-test vm-bench-beyla vagrant-test bench deb clean

help:
	@echo "make install      Debian packages (incl. python3-bpfcc, kernel headers), .venv, the package + test extras"
	@echo "make test         lint, type check, unit and integration tests (integration needs root)"
	@echo "make vm-test      the integration tests on Debian kernels 5.10/6.1/6.12 under QEMU"
	@echo "make vm-bench-beyla  bench/beyla_e2e.py with the real Beyla (CORAL_TEST_BEYLA) in a Debian 6.12 guest"
	@echo "make vagrant-test the integration tests in a Vagrant (libvirt) VM"
	@echo "make bench        the benchmarks in bench/"
	@echo "make deb          the Debian package (self-contained /opt/coral-ebpf) into dist/"

install: system-deps venv

# Installs only what is missing, so a second run needs no network and takes no dpkg lock.
system-deps:
	@set -e; \
	headers=""; \
	if [ ! -d /lib/modules/$(KREL)/build/include ]; then \
	  if apt-cache show linux-headers-$(KREL) >/dev/null 2>&1; then headers=linux-headers-$(KREL); \
	  else headers=linux-headers-$(ARCH); fi; \
	fi; \
	missing=""; \
	for p in $(DEB_PACKAGES) $(HOST_TEST_PACKAGES) $$headers; do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "make install: run as root to install:$$missing" >&2; exit 1; fi; \
	  echo "installing Debian packages:$$missing"; \
	  apt-get -o DPkg::Lock::Timeout=900 update -qq; \
	  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends $$missing; \
	else echo "Debian packages: all present"; fi

# --system-site-packages with Debian's python3 is what lets the venv import Debian's `bcc`.
venv:
	@test -x $(VENV_BIN)/python || $(PYTHON) -m venv --system-site-packages $(VENV)
	$(VENV_BIN)/python -m pip install -q --upgrade pip
	$(VENV_BIN)/python -m pip install -q -e '.[test]'
	@$(VENV_BIN)/python -c "import bcc; assert hasattr(bcc, 'BPF'), 'wrong bcc module'; print('bcc:', bcc.__file__)"
	@$(VENV_BIN)/coral-ebpf --version
	@# So that `sudo coral-ebpf start` works: sudo's PATH includes /usr/local/bin, not the venv.
	@if [ "$$(id -u)" = 0 ] && [ -z "$(NO_SYSTEM_LINK)" ]; then \
	  ln -sfn "$(CURDIR)/$(VENV_BIN)/coral-ebpf" /usr/local/bin/coral-ebpf && \
	  echo "linked /usr/local/bin/coral-ebpf -> $(CURDIR)/$(VENV_BIN)/coral-ebpf"; fi

test: lint typecheck
	$(VENV_BIN)/python -m pytest -q -ra tests/unit tests/integration

lint:
	$(VENV_BIN)/ruff check coral_ebpf tests bench
	$(VENV_BIN)/ruff format --check coral_ebpf tests bench
	$(VENV_BIN)/lint-imports
	find bpf -name '*.c' -o -name '*.h' | sort | xargs clang-format --dry-run --Werror --style=file

# The configuration reference in README.md and docs/ is generated from the schema (each setting is
# described there); this rewrites every marked block.
docs:
	$(VENV_BIN)/coral-ebpf config reference --write $$(grep -l 'BEGIN config-reference' README.md docs/*.md)

typecheck:
	$(VENV_BIN)/mypy

unit:
	$(VENV_BIN)/python -m pytest -q -ra tests/unit

integration:
	$(VENV_BIN)/python -m pytest -q -ra tests/integration

vm-test:
	tests/vm/run-matrix.sh

vm-bench-beyla:
	tests/vm/bench-beyla.sh

vagrant-test:
	vagrant/test.sh

bench:
	@for b in bench/[a-z]*.py; do echo "== $$b"; $(VENV_BIN)/python $$b || exit 1; done

# A self-contained package: /opt/coral-ebpf/lib run by Debian's python3 (+ python3-bpfcc).
deb:
	packaging/deb/build.sh dist

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache .grimp_cache build dist *.egg-info
