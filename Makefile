# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1

.PHONY: demo test test-fast lint bench gpu-check setup clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml constraints-cpu.txt
	$(BIN)/pip install --quiet -c constraints-cpu.txt -e ".[serve,test,postgres,openvino]"
	touch $(STAMP)

setup: $(STAMP)

# The demo's tune keeps to 10 minutes on any CPU (autoq tune's default budget);
# `make demo DEMO_TIMEOUT=0` runs it whole.
DEMO_TIMEOUT ?= 600

demo: $(STAMP)
	$(BIN)/autoq fingerprint --no-bench
	$(BIN)/autoq backends
	$(BIN)/autoq tune --profiles-dir profiles --timeout $(or $(DEMO_TIMEOUT),0)

# One worker per physical core (at most 4), one torch thread each: the tests are mostly
# Python-bound tiny models, and two 2-thread processes on 2 cores run 10-20x slower.
PYTEST := OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n auto --maxprocesses 4

test: $(STAMP)
	$(PYTEST)

test-fast: $(STAMP)
	$(PYTEST) -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check autoq tests benchmarks examples
	$(BIN)/ruff format --check autoq tests benchmarks examples
	$(BIN)/mypy autoq

bench: $(STAMP)
	$(BIN)/python benchmarks/backends.py
	$(BIN)/python benchmarks/tune.py wall
	# GP alone at 102 trials spends about 3 min a seed fitting: left to `--only gp`.
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/tune.py samplers --grid default --only gp-tpe,tpe,nsga2,random --corners with
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/tune.py samplers --grid default --budget 30 --only gp-tpe,tpe,gp,random --corners with
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/tune.py samplers --grid small
	$(BIN)/python benchmarks/tune.py overhead
	$(BIN)/python benchmarks/quality.py stability
	$(BIN)/python benchmarks/quality.py span
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/runtime.py
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/load.py load
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/load.py squeeze

# On a CUDA machine, after the GPU install in docs/contributing.md (CUDA torch in .venv or on PATH).
GPU_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)
gpu-check:
	$(GPU_PYTHON) benchmarks/gpu_check.py --out benchmarks/results/gpu_check.txt

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
