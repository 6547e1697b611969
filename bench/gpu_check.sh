#!/usr/bin/env bash
# One prepared GPU check (at most 8 minutes): the hf engine on CUDA fed by the
# fabric vs the same jobs fed directly. See bench/gpu_check.py for what it does.
#
#   bash bench/gpu_check.sh                        # CUDA, 300M model, 512 trace jobs
#   bash bench/gpu_check.sh --device cpu --size tiny --jobs 48 --max-new-tokens 16
#
# Needs: Python with torch and transformers, and nothing else when the tree
# carries build/gpu-bundle (make gpu-bundle): its redis-server is used, and its
# wheels are installed offline when the fabric's light dependencies (redis,
# orjson, click, tenacity) are missing. Without the bundle: redis-server on
# PATH (or REDIS_SERVER=/path/to/redis-server), and those dependencies
# importable or in a folder named by FABRIC_DEPS. Nothing is downloaded.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DEADLINE_S="${GPU_CHECK_DEADLINE_S:-480}"

if [[ -n "${PYTHON:-}" ]]; then
  py="$PYTHON"
elif [[ -x "$ROOT/.venv/bin/python" ]]; then
  py="$ROOT/.venv/bin/python"
else
  py="$(command -v python3 || true)"
fi
if [[ -z "$py" ]]; then
  echo "gpu_check: no python3 found (set PYTHON=...)" >&2
  exit 1
fi

BUNDLE="${GPU_BUNDLE:-$ROOT/build/gpu-bundle}"
if [[ -z "${REDIS_SERVER:-}" && -x "$BUNDLE/bin/redis-server" ]]; then
  REDIS_SERVER="$BUNDLE/bin/redis-server"
fi
if [[ -n "${REDIS_SERVER:-}" ]]; then
  if [[ ! -x "$REDIS_SERVER" ]]; then
    echo "gpu_check: REDIS_SERVER=$REDIS_SERVER is not an executable file" >&2
    exit 1
  fi
  PATH="$(dirname "$REDIS_SERVER"):$PATH"
  export PATH
fi
if ! command -v redis-server >/dev/null; then
  echo "gpu_check: redis-server is not on PATH; bring one (a redis-server binary) and set" \
       "REDIS_SERVER=/path/to/redis-server, or put it on PATH" >&2
  exit 1
fi

export PYTHONPATH="$ROOT${FABRIC_DEPS:+:$FABRIC_DEPS}${PYTHONPATH:+:$PYTHONPATH}"
if ! "$py" -c "import torch, transformers" 2>/dev/null; then
  echo "gpu_check: $py cannot import torch and transformers" >&2
  exit 1
fi
if [[ -z "${FABRIC_DEPS:-}" && -d "$BUNDLE/wheels" ]] \
    && ! "$py" -c "import redis, orjson, click, tenacity" 2>/dev/null; then
  FABRIC_DEPS="$BUNDLE/site-$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  if [[ ! -d "$FABRIC_DEPS" ]]; then
    "$py" -m pip install --quiet --no-index --find-links "$BUNDLE/wheels" --target "$FABRIC_DEPS.partial" \
      "redis[hiredis]" orjson click tenacity prometheus-client rich
    mv "$FABRIC_DEPS.partial" "$FABRIC_DEPS"
  fi
  export PYTHONPATH="$PYTHONPATH:$FABRIC_DEPS"
fi
if ! "$py" -c "import redis, orjson, click, tenacity" 2>/dev/null; then
  echo "gpu_check: $py cannot import redis, orjson, click and tenacity; install them or set" \
       "FABRIC_DEPS to a folder made with: pip install --target DIR redis orjson click tenacity" >&2
  exit 1
fi
"$py" -c "import torch, transformers; print(f'torch {torch.__version__}, transformers {transformers.__version__}, redis-server: $(command -v redis-server)')"

exec timeout --signal=TERM --kill-after=10 "$DEADLINE_S" "$py" -m bench.gpu_check "$@"
