# Two entry points: `make export` runs the main job, `make test` runs the test suite.
# Both create .venv on first use. Machines without CUDA get torch's CPU build (TORCH_SPEC); on a GPU host,
# install your CUDA build of torch into .venv first, or set TORCH_SPEC to it.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: venv export test
venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

export: venv
	$(BIN)/smlp-export --variant tiny --fp16

test: venv
	$(BIN)/python -m pytest -q
