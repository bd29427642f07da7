# Two entry points for a fresh clone (see README): `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: setup demo test lint

setup: $(VENV)/.installed

# CPU torch 2.13.0 is installed only when the venv has no torch, in the same pip command as
# the rest, so nothing can pull a multi-GB CUDA build. Users with their own CUDA torch use
# `pip install -e .` instead.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	if $(PY) -c "import torch" 2>/dev/null; then $(PIP) install -q -e ".[dev]"; \
	else $(PIP) install -q "torch==2.13.0" -e ".[dev]"; fi
	# only for CLIP's BPE vocabulary file (toyworld-sd's tokenizer); --no-deps because its
	# requirements would replace the CPU torch with a CUDA build
	$(PIP) install -q --no-deps "open-clip-torch==3.3.0"
	touch $@

demo: setup
	$(VENV)/bin/unsee demo

lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/pytest
