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
	# That server's python-backend stub is built against numpy 1.x, so the Triton model
	# files run on a Python of their own (spellfix-serve's default python_env).
	$(BIN)/python -m venv $(VENV)/triton-python
	$(VENV)/triton-python/bin/pip install --quiet "numpy<2" onnxruntime tokenizers rapidfuzz jellyfish
	touch $@

setup: $(BIN)/.installed

# The default job: synthesize typos from the built-in corpus, train bart_tiny on the CPU,
# export it to ONNX (validated against PyTorch) and correct sample queries through
# ONNX Runtime. Each step prints where it wrote; outputs/latest is the newest run.
SAMPLES := "teh best" "waht time is it" "new yrok city" "quen bohemian rapsody" "the beatels let it be"
train: setup
	$(BIN)/spellfix-train
	$(BIN)/spellfix-export model_path=outputs/latest/model output_dir=outputs/latest/onnx \
		validation.queries=outputs/latest/dataset overwrite=true
	$(BIN)/spellfix-correct --backend onnx --model outputs/latest/onnx --json $(SAMPLES)

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
