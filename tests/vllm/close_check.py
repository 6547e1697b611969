"""Start a VllmEngine, serve one request, close it; print what vLLM says of its core.

    python -m tests.vllm.close_check MANIFEST

The last line is JSON: the request's finish reason, and whether vLLM's own
finalizer of the engine core client was still pending before and after
close() (it is spent only when the core was shut down), with this script
still holding the client, so that garbage collection cannot stand in for a
shutdown.
"""

from __future__ import annotations

import json
import sys

from engines.contract import EngineRequest
from engines.manifest import load_manifest
from engines.vllm.engine import VllmEngine


def main(manifest_path: str) -> None:
    engine = VllmEngine(load_manifest(manifest_path))
    core = engine._engine.engine_core
    engine.submit([EngineRequest(1, [1, 2, 3], 2)])
    outputs = []
    while not outputs:
        outputs = engine.poll(1.0)
    alive_before = core._finalizer.alive
    engine.close()
    report = {
        "served": outputs[0].finish_reason.value,
        "alive_before_close": alive_before,
        "alive_after_close": core._finalizer.alive,
    }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
