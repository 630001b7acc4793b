# The two commands of README.md:
#   make run   - set everything up and run the main job
#   make test  - set everything up and run the whole test suite
# TORCH_SPEC picks the torch build. Without a GPU (no nvidia-smi) it is the CPU build, from PyTorch's CPU
# wheel index (PyPI's plain torch is the multi-GB CUDA build with ~19 nvidia packages). With nvidia-smi it
# is PyPI's torch, the CUDA build; or pass e.g. TORCH_SPEC="torch==2.13.0 --index-url <your CUDA wheel index>".

PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
ifeq ($(shell command -v nvidia-smi 2>/dev/null),)
# --retries 1: where that index cannot be reached (a plant mirror), pip goes on with the others at once
# instead of retrying each of torch's dependencies for ~8 s (75 s in all, measured).
TORCH_SPEC ?= torch==$(TORCH_VERSION)+cpu --extra-index-url https://download.pytorch.org/whl/cpu --retries 1
else
TORCH_SPEC ?= torch==$(TORCH_VERSION)
endif
# setup installs the package with these extras; make run needs none, make test installs the test extra.
EXTRAS ?= test
BIN := $(VENV)/bin
comma := ,
STAMP := $(VENV)/.installed-$(if $(EXTRAS),$(subst $(comma),-,$(EXTRAS)),base)
step = @echo "inspectd setup [$$(date +%T)]: $(1)"

.PHONY: setup run test model model-mt clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(call step,pip itself)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(call step,$(firstword $(TORCH_SPEC)) (about 200 MB for the CPU build; 2-3 min on a fresh box))
	$(BIN)/python -m pip install --progress-bar on $(TORCH_SPEC)
	$(call step,inspectd and its dependencies$(if $(EXTRAS), with [$(EXTRAS)]) (transformers and the rest; 1-5 min))
	$(BIN)/python -m pip install --quiet -e '.$(if $(EXTRAS),[$(EXTRAS)])'
	$(call step,done)
	touch $@ $(VENV)/.installed-base

setup: $(STAMP)

# The main job: the daemon on the shipped model and config, watching var/drop,
# with a demo feed dropping fresh synthetic images into it, and the web console
# on http://127.0.0.1:8780/ (it waits for the daemon to create the store). Ctrl-C stops all three.
# Each command is given DEMO_CONFIG: on a box where the service is installed, /etc/inspectd/inspectd.yaml
# (or INSPECTD_CONFIG) would otherwise win, and the demo would feed and watch the production line's folders.
DEMO_CONFIG ?= config/inspectd.yaml
# make run CONFIG=/path/to/plant.yaml: the daemon and the console on your own config and model (no demo feed).
CONFIG ?=
run:
	@$(MAKE) --no-print-directory setup EXTRAS=
ifeq ($(CONFIG),)
	@echo "inspectd: $(DEMO_CONFIG), watching var/drop; console: http://127.0.0.1:8780/; query with: $(BIN)/inspectd --config $(DEMO_CONFIG) history / show ID / stats"
	@$(BIN)/inspectd --config $(DEMO_CONFIG) demo-feed --wait-ready --count 8 --interval 3 & feeder=$$!; \
	$(BIN)/inspectd --config $(DEMO_CONFIG) serve & console=$$!; \
	$(BIN)/inspectd --config $(DEMO_CONFIG) run; status=$$?; kill $$feeder $$console 2>/dev/null; wait $$console 2>/dev/null; exit $$status
else
	@echo "inspectd: $(CONFIG); query with: $(BIN)/inspectd --config $(CONFIG) history / show ID / stats"
	@$(BIN)/inspectd --config $(CONFIG) serve & console=$$!; \
	$(BIN)/inspectd --config $(CONFIG) run; status=$$?; kill $$console 2>/dev/null; wait $$console 2>/dev/null; exit $$status
endif

test: setup
	$(BIN)/python -m pytest -q

# Rebuild the shipped default model (models/tiny-cgro) from nothing: about an
# hour on 2 CPU cores. Stages resume; delete var/recipe/tiny-cgro to start over.
model: setup
	$(BIN)/inspectd-train recipe --config models/recipes/tiny-cgro.yaml

# Learn the magnetic-tile line from its OK/NG folder (the recipe's data.path, a folder beside the
# clone): models/magnetic-tile-cgro, about 80 minutes on 2 CPU cores. Stages resume likewise.
model-mt: setup
	$(BIN)/inspectd-train recipe --config models/recipes/magnetic-tile-cgro.yaml

clean:
	rm -rf $(VENV) out .pytest_cache
