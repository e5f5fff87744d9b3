# Two entry points: `make export` runs the main job, `make test` runs the test suite.
# Both create .venv on first use. Machines without CUDA get torch's CPU build (TORCH_SPEC); on a GPU host,
# install your CUDA build of torch into .venv first, or set TORCH_SPEC to it.
# `make gpu-check`, on a GPU host: everything that needs the GPU, then a summary to paste into an issue.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
# tritonserver for the served tests: nvidia-pytriton's wheel pins numpy<2, so only its files are installed, into a
# folder of the venv that smlp_deploy.serving looks in (pip's view of the venv stays clean). About 5 s from pip's
# cache, 55 MB to download otherwise.
TRITON_DIST := $(VENV)/tritonserver
TRITON_SPEC ?= nvidia-pytriton==0.7.0
STUBS := $(VENV)/tensorrt-stubs

.PHONY: venv export test gpu-check
venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@echo "== setting up $(VENV) (on a fresh clone about a minute and a half)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -c "import torch" 2>/dev/null && echo "== keeping the torch already in $(VENV)" || \
		{ echo "== installing $(TORCH_SPEC) (the CPU build where there is no CUDA; about 200 MB)"; \
		  $(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"; }
	@# The main job also builds TensorRT-for-RTX engines, which needs no GPU: the rtx extra (about 96 MB to
	@# download, 243 MB installed).
	@echo "== installing smlp-deploy with its dependencies (onnx, onnxruntime, onnxsim, onnxscript, pillow) and TensorRT for RTX"
	$(BIN)/python -m pip install --quiet -e ".[rtx]"
	@touch $@

export: venv
	$(BIN)/smlp-export --variant tiny --fp32 --fp16

# The tests also cover the optional extras: `rtx` (engines built for real), `serve` (tritonclient) with the
# tritonserver binary, `ray` (Ray Data, about 500 MB, ~30 s to install) and `openvino` (180 MB).
$(VENV)/.test-extras: $(VENV)/.installed
	@echo "== installing the test tools and extras: dev, serve (tritonclient), ray (ray[data], about 500 MB) and openvino (180 MB)"
	$(BIN)/python -m pip install --quiet -e ".[dev,docs,rtx,serve,ray,openvino]"
	@echo "== installing tritonserver ($(TRITON_SPEC), binaries only) into $(TRITON_DIST)"
	$(BIN)/python -m pip install --quiet --no-deps --upgrade --target $(TRITON_DIST) "$(TRITON_SPEC)" || \
		echo "== tritonserver cannot be installed here (it needs Linux x86-64, glibc >= 2.35): the served tests will skip"
	@touch $@

# TensorRT's type stubs, for tests/test_typing.py (pip install --no-deps into a folder of their own, then patched).
$(STUBS)/.patched: tests/tensorrt_stubs.py | venv
	@echo "== installing tensorrt-stubs into $(STUBS) (type-checking the TensorRT modules)"
	$(BIN)/python -m tests.tensorrt_stubs $(STUBS)

# Lint first (the rule set is pyproject.toml's [tool.ruff.lint]); mypy over the whole package runs in the suite
# (tests/test_typing.py). The suite runs on TEST_WORKERS pytest-xdist workers, a module to a worker (tests/conftest.py
# groups them, so its module fixtures are made once): on the 2-core CI machine pytest took 339 s with 2 against 495 s
# in one process, run back to back on 2026-12-01 (TEST_WORKERS=0 runs it in one process).
TEST_WORKERS ?= 2
test: $(VENV)/.test-extras $(STUBS)/.patched
	@echo "== building the documentation site (mkdocs build --strict: a broken link or a missing page fails)"
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir $(VENV)/site
	$(BIN)/ruff check smlp_deploy docs tests
	$(BIN)/python -m pytest -q --numprocesses $(TEST_WORKERS) --dist loadgroup

# Asks smlp-doctor first and installs nothing unless a CUDA GPU is usable here.
gpu-check: venv
	@echo "== [1/3] smlp-doctor: can torch use a CUDA GPU here?"
	@$(BIN)/smlp-doctor --require gpu
	@echo "== [2/3] installing the trt, rtx, gpu and bench extras into $(VENV)"
	$(BIN)/python -m pip install --quiet -e ".[dev,trt,rtx,gpu,bench]"
	@# onnxruntime and onnxruntime-gpu share the onnxruntime module; keep the GPU one (microsoft/onnxruntime#26996)
	$(BIN)/python -m pip uninstall --quiet -y onnxruntime
	$(BIN)/python -m pip install --quiet --force-reinstall --no-deps \
		"onnxruntime-gpu==$$($(BIN)/python -c 'from importlib.metadata import version; print(version("onnxruntime-gpu"))')"
	@echo "== [3/3] doctor, GPU tests, export with engines, benchmark matrix (python -m tests.gpu_check)"
	$(BIN)/python -m tests.gpu_check
