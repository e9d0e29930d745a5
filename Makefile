# The two set-up commands of the README:
#   make demo   -> virtual environment, torch (CPU build) when missing, medvlm, then `medvlm demo`
#   make test   -> the same environment plus test tools, then the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
DEMO_OUT ?= medvlm-demo

.PHONY: venv install install-dev demo test lint bench mutation clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch is installed first and only when missing: `torch==2.13.0` is the CPU build on these machines.
venv: $(BIN)/python
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION)

install: venv
	$(BIN)/python -m pip install --quiet -e ".[all]"

install-dev: venv
	$(BIN)/python -m pip install --quiet -e ".[all,dev]"

demo: install
	$(BIN)/medvlm demo --out $(DEMO_OUT)

test: install-dev
	$(BIN)/python -m pytest -q --durations=15

lint: install-dev
	$(BIN)/ruff check src tests benchmarks

bench: install-dev
	$(BIN)/python benchmarks/run.py

# Mutation testing of the core (slow, so not in `make test` or CI): mutmut over the modules listed in
# pyproject.toml [tool.mutmut], the score per module, then the hand-written mutants mutmut cannot make.
# MUTATION_ARGS=--retest reruns only the mutants not killed yet. See benchmarks/MUTATION.md.
MUTMUT_VERSION ?= 3.8.1
MUTATION_ARGS ?=
mutation: install-dev
	$(BIN)/python -m pip install --quiet "mutmut==$(MUTMUT_VERSION)"
	$(BIN)/python benchmarks/mutation.py run $(MUTATION_ARGS)
	$(BIN)/python benchmarks/mutation.py hand

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .ruff_cache mutants
