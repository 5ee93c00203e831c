# Two commands from a fresh clone: `make demo` (a first picture, offline) and `make test` (the suite).
# Each sets up $(VENV) first when it is missing or older than pyproject.toml: the README's install steps, with
# the torch build for this machine. tests/unit/test_project.py keeps this file, the README and .ci/run agreeing.

VENV ?= .venv
PYTHON ?= python3
TORCH ?= torch==2.13.0
# An index for another torch build, e.g. https://download.pytorch.org/whl/cu126 (a CUDA version) or .../whl/cpu.
TORCH_INDEX ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.stablekit-installed
CUDA := $(shell nvidia-smi >/dev/null 2>&1 && echo yes)

.PHONY: demo test setup

setup: $(STAMP)

# The README's "Install" steps. PyPI's torch wheel for Linux is the CUDA build: what a machine where
# nvidia-smi works gets; a CPU-only machine gets the CPU wheel where one is on offer (as on the development
# machine), else the CUDA build, which runs on CPUs too (TORCH_INDEX=https://download.pytorch.org/whl/cpu
# for the smaller one).
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || { echo "Creating $(VENV) ..."; $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install $(TORCH) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install -e '.[dev]'
	@$(BIN)/python -c "import torch; cuda = torch.cuda.is_available(); \
	print(f'torch {torch.__version__}:', 'CUDA' if cuda else 'CPU only'); \
	'$(CUDA)' == 'yes' and not cuda and print('Warning: nvidia-smi works but this torch build has no CUDA: ' \
	'rerun with TORCH_INDEX=https://download.pytorch.org/whl/cuXXX for your CUDA version')"
	@touch $@

# The README's tiny-model example, offline: no download, a few seconds on a CPU (the picture is noise).
demo: setup
	@path=$$(HF_HUB_OFFLINE=1 $(BIN)/stablekit image "a lighthouse at dusk" --model tiny-sd --output-dir demo) \
	  && echo "Wrote $$path (and $$path.json, its sidecar); tiny-sd has random weights, so it is noise." \
	  && echo "The real default model (sdxl, a 6.5 GiB download on first use):" \
	  && echo "  . $(BIN)/activate && stablekit image \"a lighthouse at dusk\""

test: setup
	$(BIN)/python -m pytest
