# Two entry points: `make export` runs the main job, `make test` runs the test suite.
# Both create .venv on first use. Machines without CUDA get torch's CPU build (TORCH_SPEC); on a GPU host,
# install your CUDA build of torch into .venv first, or set TORCH_SPEC to it.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
# tritonserver for the served tests: nvidia-pytriton's wheel pins numpy<2, so only its files are installed, into a
# folder of the venv that smlp_deploy.serving looks in (pip's view of the venv stays clean). About 5 s from pip's
# cache, 55 MB to download otherwise.
TRITON_DIST := $(VENV)/tritonserver
TRITON_SPEC ?= nvidia-pytriton==0.7.0

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

# The tests also cover the optional extras: `serve` (tritonclient) with the tritonserver binary, and `ray`
# (Ray Data, about 500 MB, ~30 s to install).
$(VENV)/.test-extras: $(VENV)/.installed
	@echo "== installing the test extras: serve (tritonclient) and ray (ray[data], about 500 MB)"
	$(BIN)/python -m pip install --quiet -e ".[dev,serve,ray]"
	@echo "== installing tritonserver ($(TRITON_SPEC), binaries only) into $(TRITON_DIST)"
	$(BIN)/python -m pip install --quiet --no-deps --upgrade --target $(TRITON_DIST) "$(TRITON_SPEC)" || \
		echo "== tritonserver cannot be installed here (it needs Linux x86-64, glibc >= 2.35): the served tests will skip"
	@touch $@

test: $(VENV)/.test-extras
	$(BIN)/python -m pytest -q
