# Two commands matter: `make train` (the default job) and `make test` (the suite).
# Both create .venv on first use. torch is pinned before anything else so that a
# machine without a GPU installs the CPU wheel instead of resolving a CUDA build.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_PIN ?= torch==2.13.0

.PHONY: setup train test lint format clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_PIN)"
	$(BIN)/pip install --quiet -e ".[dev]"
	# The Triton server binary ships in nvidia-pytriton; its Python API pins numpy<2,
	# which spellfix does not use, so the wheel is installed without its dependencies.
	$(BIN)/pip install --quiet "tritonclient[http,grpc]>=2.50"
	$(BIN)/pip install --quiet --no-deps "nvidia-pytriton>=0.5"
	touch $@

setup: $(BIN)/.installed

train: setup
	$(BIN)/spellfix-train

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache .ruff_cache
