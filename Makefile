# On a fresh clone, `make test` (or `make demo`) creates .venv and installs everything into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install test demo bench bench-quick offline-data clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/captioner caption examples/

# Benchmarks: writes bench/RESULTS.md (about 10 minutes on a 2-core CPU; bench-quick: small sizes), and
# with a CUDA GPU also the device table bench/RESULTS-cuda.md.
bench: $(STAMP)
	$(BIN)/python bench/run.py
	if $(BIN)/python -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then \
		$(BIN)/python bench/run.py --device cuda; fi

bench-quick: $(STAMP)
	$(BIN)/python bench/run.py --quick --out bench/.quick/RESULTS.md

# The offline training data: installs Debian/npm packages (needs root or sudo), builds offline_data/,
# then adds two composite views per training image (offline_data/dataset_offline_composite.json).
offline-data: $(STAMP)
	bash data_scripts/install_offline_sources.sh
	$(BIN)/python data_scripts/build_offline_dataset.py --out offline_data
	$(BIN)/python data_scripts/composite_views.py --data offline_data --per-image 2 --seed 0

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
