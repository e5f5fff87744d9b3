# Two entry points: `make export` runs the main job, `make test` runs the test suite.
# Both create .venv on first use. Machines without CUDA get torch's CPU build (TORCH_SPEC); on a GPU host,
# install your CUDA build of torch into .venv first, or set TORCH_SPEC to it.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STUBS := $(VENV)/tensorrt-stubs

.PHONY: venv export test
venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@echo "== setting up $(VENV) (on a fresh clone about a minute and a half)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -c "import torch" 2>/dev/null && echo "== keeping the torch already in $(VENV)" || \
		{ echo "== installing $(TORCH_SPEC) (the CPU build where there is no CUDA; about 200 MB)"; \
		  $(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"; }
	@echo "== installing smlp-deploy with its dependencies (onnx, onnxruntime, onnxsim, onnxscript, pillow) and the test tools"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $@

export: venv
	$(BIN)/smlp-export --variant tiny --fp16

# TensorRT's type stubs, for tests/test_typing.py (pip install --no-deps into a folder of their own, then patched).
$(STUBS)/.patched: tests/tensorrt_stubs.py | venv
	@echo "== installing tensorrt-stubs into $(STUBS) (type-checking the TensorRT modules)"
	$(BIN)/python -m tests.tensorrt_stubs $(STUBS)

test: venv $(STUBS)/.patched
	$(BIN)/python -m pytest -q
