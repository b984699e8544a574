# biotwin: `make run` sets up and starts the main job, `make test` runs lint and tests.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DATA_DIR ?= $(or $(BIOTWIN_DATA_DIR),var)

.PHONY: run test lint format bench sample clean

NODE_STAMP := connectors/interop/node_modules/.installed-stamp

$(NODE_STAMP): connectors/interop/package-lock.json
	npm ci --prefix connectors/interop --no-audit --no-fund
	touch $(NODE_STAMP)

$(STAMP): pyproject.toml
	@echo "installing biotwin's Python packages into $(VENV) (a minute or two on a fresh machine)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --progress-bar off -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/biotwin up --demo --data-dir $(DATA_DIR)

test: $(STAMP) $(NODE_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q --durations=25

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP) $(NODE_STAMP)
	$(BIN)/python benchmarks/bench_simulate.py
	$(BIN)/python benchmarks/bench_scenarios.py
	$(BIN)/python benchmarks/bench_historian.py
	$(BIN)/python benchmarks/bench_ingest.py
	$(BIN)/python benchmarks/bench_receive.py
	$(BIN)/python benchmarks/bench_quality.py
	$(BIN)/python benchmarks/bench_dashboard.py

sample: $(STAMP)
	$(BIN)/biotwin simulate --days 60 --seed 7 --sample-interval-min 10 --out sample_data/twin

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache connectors/interop/node_modules
