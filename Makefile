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

.PHONY: setup run test model model-mt clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-$(EXTRAS): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

setup: $(VENV)/.installed-$(EXTRAS)

# The main job: the daemon on the shipped model and config, watching var/drop,
# with a demo feed dropping fresh synthetic images into it, and the web console
# on http://127.0.0.1:8780/ (it waits for the daemon to create the store). Ctrl-C stops all three.
# Each command is given DEMO_CONFIG: on a box where the service is installed, /etc/inspectd/inspectd.yaml
# (or INSPECTD_CONFIG) would otherwise win, and the demo would feed and watch the production line's folders.
DEMO_CONFIG ?= config/inspectd.yaml
run: setup
	@echo "inspectd: $(DEMO_CONFIG), watching var/drop; console: http://127.0.0.1:8780/; query with: $(BIN)/inspectd --config $(DEMO_CONFIG) history / show ID / stats"
	@$(BIN)/inspectd --config $(DEMO_CONFIG) demo-feed --delay 8 --count 8 --interval 3 & feeder=$$!; \
	$(BIN)/inspectd --config $(DEMO_CONFIG) serve & console=$$!; \
	$(BIN)/inspectd --config $(DEMO_CONFIG) run; status=$$?; kill $$feeder $$console 2>/dev/null; wait $$console 2>/dev/null; exit $$status

test: setup
	$(BIN)/python -m pytest -q

# Rebuild the shipped default model (models/tiny-cgro) from nothing: about an
# hour on 2 CPU cores. Stages resume; delete var/recipe/tiny-cgro to start over.
model: setup
	$(BIN)/inspectd-train recipe --config models/recipes/tiny-cgro.yaml

# Learn the magnetic-tile line from its OK/NG folder (shared/datasets/magnetic_tile_train beside the
# clone): models/magnetic-tile-cgro, about 80 minutes on 2 CPU cores. Stages resume likewise.
model-mt: setup
	$(BIN)/inspectd-train recipe --config models/recipes/magnetic-tile-cgro.yaml

clean:
	rm -rf $(VENV) out .pytest_cache
