# Two entry points, each doing its own set-up on a fresh machine:
#   make demo   the mini recipe end to end (synthesise, shard, train on CPU, decode, score)
#   make test   the test suite
PYTHON ?= python3
VENV   ?= .venv
TOOLS  ?= .tools
UV     := $(TOOLS)/bin/uv
APT_PACKAGES := espeak-ng sox sctk libsndfile1

.PHONY: demo test lint deps setup sysdeps clean lm-tools lock sync

demo: deps
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash recipes/mini/run.sh

test: deps lint
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/python -m pytest -q tests

# Style and layers: ruff (lint + formatting) and import-linter's contracts in pyproject.toml.
lint: deps
	$(VENV)/bin/ruff check astctc tests bench
	$(VENV)/bin/ruff format --check astctc tests bench
	$(VENV)/bin/lint-imports --no-cache

setup: sysdeps $(VENV)/.installed

# All set-up. Debian packages first (one apt-get at a time), then the locked environment
# (download and unpacking, mostly one core) and the KenLM build (compiling) side by side.
# The venv is made first (uv venv, a second) so the two never race to create it.
deps: sysdeps $(UV)
	@test -f $(VENV)/pyvenv.cfg || $(UV) venv -q --python $(PYTHON) $(VENV)
	@$(MAKE) --no-print-directory -j2 $(VENV)/.installed lm-tools

# Debian packages, installed only when missing and we are root (CI and fresh machines are).
sysdeps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing Debian packages:$$missing (run as root or install them)"; exit 1; fi; \
	fi

# uv itself, in its own small venv (uv sync would remove it from .venv), from a hash-pinned
# requirement: the one package not covered by uv.lock.
$(UV): requirements/uv.txt
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install -q --disable-pip-version-check --require-hashes --no-deps -r requirements/uv.txt
	touch $@

# The environment is exactly uv.lock (--locked: an edited pyproject.toml without a refreshed
# lock is an error, not a silent re-resolve). --exact removes anything installed by hand.
$(VENV)/.installed: uv.lock pyproject.toml $(UV)
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --locked --exact --extra dev --python $(PYTHON) -q
	touch $@

# Refresh the lock to the newest releases the ranges in pyproject.toml admit, then rebuild the
# environment and run the tests: commit uv.lock only when they pass.
lock: $(UV)
	$(UV) lock --upgrade --python $(PYTHON)
	$(MAKE) --no-print-directory test

# Put the environment back to exactly uv.lock (after a package was changed by hand).
sync: $(UV)
	rm -f $(VENV)/.installed
	$(MAKE) --no-print-directory $(VENV)/.installed

clean:
	rm -rf $(VENV) $(TOOLS) recipes/*/data recipes/*/exp

# KenLM's lmplz and build_binary in $(VENV)/bin, compiled from the kenlm sdist on PyPI
# (about 40-90 s on 2 cores, once; a second run does nothing). Beam-search LMs need them.
# The sdist is the one uv.lock names, checked against its sha256 there.
lm-tools:
	bash lm/build_kenlm.sh --prefix "$(CURDIR)/$(VENV)"
