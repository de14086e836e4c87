# Two entry points, each doing its own set-up on a fresh machine:
#   make demo   the mini recipe end to end (synthesise, shard, train on CPU, decode, score)
#   make test   the test suite
PYTHON ?= python3
VENV   ?= .venv
APT_PACKAGES := espeak-ng sox sctk libsndfile1

.PHONY: demo test setup sysdeps clean lm-tools

demo: setup lm-tools
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash recipes/mini/run.sh

test: setup lm-tools
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/python -m pytest -q tests

setup: sysdeps $(VENV)/.installed

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
# (about 1.5 min on 2 cores, once; a second run does nothing). Beam-search LMs need them.
.PHONY: lm-tools
lm-tools: $(VENV)/.installed
	bash lm/build_kenlm.sh --prefix "$(CURDIR)/$(VENV)"
