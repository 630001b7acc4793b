# The two commands of README.md:
#   make run   - set everything up and run the main job
#   make test  - set everything up and run the whole test suite
# TORCH_SPEC picks the torch build: the pinned version installs a CPU build on
# CPU boxes; on a GPU box pass e.g. TORCH_SPEC="torch==2.13.0 --index-url <your CUDA wheel index>".

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= test
BIN := $(VENV)/bin

.PHONY: setup run test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-$(EXTRAS): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

setup: $(VENV)/.installed-$(EXTRAS)

run: setup
	$(BIN)/inspectd inspect samples/*.png --out out/samples

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) out .pytest_cache
