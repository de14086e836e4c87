# Two entry points, each doing its own set-up on a fresh machine:
#   make demo   the mini recipe end to end (synthesise, shard, train on CPU, decode, score)
#   make test   the test suite
PYTHON ?= python3
VENV   ?= .venv
APT_PACKAGES := espeak-ng sox sctk libsndfile1

.PHONY: demo test deps setup sysdeps clean lm-tools

demo: deps
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash recipes/mini/run.sh

test: deps
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/python -m pytest -q tests

setup: sysdeps $(VENV)/.installed

# All set-up. Debian packages first (one apt-get at a time), then the package install (mostly
# download and unpacking, one core) and the KenLM build (compiling) side by side: about 40 s
# less than one after the other. Side by side needs a pip in $(PYTHON) to fetch the kenlm sdist.
deps: sysdeps
	@if $(PYTHON) -m pip --version >/dev/null 2>&1; then \
	  $(MAKE) --no-print-directory -j2 $(VENV)/.installed lm-tools KENLM_PYTHON="$(PYTHON)"; \
	else $(MAKE) --no-print-directory $(VENV)/.installed && $(MAKE) --no-print-directory lm-tools; fi

# Debian packages, installed only when missing and we are root (CI and fresh machines are).
sysdeps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing Debian packages:$$missing (run as root or install them)"; exit 1; fi; \
	fi

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e ".[dev]"
	touch $@

clean:
	rm -rf $(VENV) recipes/*/data recipes/*/exp

# KenLM's lmplz and build_binary in $(VENV)/bin, compiled from the kenlm sdist on PyPI
# (about 40-90 s on 2 cores, once; a second run does nothing). Beam-search LMs need them.
# KENLM_PYTHON: the Python whose pip fetches the sdist (empty: the venv's).
KENLM_PYTHON ?=
lm-tools:
	bash lm/build_kenlm.sh --prefix "$(CURDIR)/$(VENV)" $(if $(KENLM_PYTHON),--python "$(KENLM_PYTHON)")
