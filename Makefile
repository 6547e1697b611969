# Everything runs in .venv, created on first use from pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-unit lint bench bench-quick chaos chaos-failover clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,hf]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m fabric_worker.dev.demo

test: $(STAMP)
	@command -v redis-server >/dev/null || { echo "redis-server is needed by the integration tests: sudo apt-get install -y redis-server"; exit 1; }
	$(BIN)/python -m pytest -q

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python .ci/module_sizes.py

bench: $(STAMP)
	$(BIN)/python -m bench.run_all

bench-quick: $(STAMP)
	$(BIN)/python -m bench.run_all --quick

chaos: $(STAMP)
	$(BIN)/python -m bench.chaos --jobs 100000

# A Redis Cluster master SIGKILLed mid-run, ten times: worker exits, missing, doubled.
chaos-failover: $(STAMP)
	$(BIN)/python -m bench.failover --topology cluster --runs 10

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
