"""The naive worker: what users build on a job queue, as the baseline for saturation.

One stream, one consumer group, one thread that owns the engine:

- FIFO reads: ``XREADGROUP COUNT n`` with n = the free slots under the cap, never more
  than 32 (``READ_COUNT``); it blocks only while the engine is idle;
- the engine is fed whatever arrived, in arrival order: no lanes, no token budget, no
  class grouping;
- at most 32 requests in flight (``MAX_IN_FLIGHT``);
- finished requests: one pipeline per poll with each result's XADD and XACK.

It refills to the cap after every engine poll rather than waiting for a whole batch of
32 to finish, which is the stronger of the two loops users write; the benchmark compares
against the stronger one. It writes results and headers in the fabric's wire format so
the same reader measures both.

Run as ``python -m bench.naive --url ... --manifest M --expect N``; prints ``READY``
and ``RESULT {json}`` like bench.fabric_child. Any manifest: ``sim`` ones get
``--batching``, others are built by the engine registry. :func:`serve_engine`
runs the loop on an engine the caller owns (bench.engine_feed shares one).
"""

from __future__ import annotations

import argparse
import json
import time
from array import array
from dataclasses import asdict
from typing import Any

import orjson
import redis

from engines.clock import WallClock
from engines.contract import Engine, EngineRequest
from engines.manifest import load_manifest
from engines.registry import create_engine

READ_COUNT = 32
MAX_IN_FLIGHT = 32
GROUP = "naive"
STREAM = "naive:jobs"
RESULTS = "naive:results"
IDLE_BLOCK_MS = 50
POLL_S = 0.002


def create_stream(client: redis.Redis) -> None:
    client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)


def serve(url: str, manifest_path: str, batching: str, expect: int) -> dict:
    client = redis.Redis.from_url(url)
    manifest = load_manifest(manifest_path)
    options: dict[str, Any] = {}
    if manifest.backend == "sim":
        options = {"clock": WallClock(), "batching": batching}
    engine = create_engine(manifest, **options)
    print("READY", flush=True)
    result = serve_engine(client, engine, expect)
    engine.close()
    return result


def serve_engine(client: redis.Redis, engine: Engine, expect: int) -> dict:
    """Serve ``expect`` jobs from STREAM with ``engine``; call on the engine's thread."""
    in_flight: dict[int, tuple[bytes, dict]] = {}
    next_id = 1
    num_done = 0
    started = time.monotonic()
    while num_done < expect:
        room = MAX_IN_FLIGHT - len(in_flight)
        if room > 0:
            reply = client.xreadgroup(
                GROUP,
                "naive",
                {STREAM: ">"},
                count=min(READ_COUNT, room),
                block=None if in_flight else IDLE_BLOCK_MS,
            )
            requests = []
            for entry_id, fields in reply[0][1] if reply else []:
                header = orjson.loads(fields[b"h"])
                tokens = array("I")
                tokens.frombytes(fields[b"t"])
                requests.append(EngineRequest(next_id, tokens, header["max_new_tokens"]))
                in_flight[next_id] = (entry_id, header)
                next_id += 1
            if requests:
                engine.submit(requests)
        if not in_flight:
            continue
        outputs = engine.poll(POLL_S)
        if not outputs:
            continue
        now = time.time()
        pipe = client.pipeline(transaction=False)
        for out in outputs:
            entry_id, header = in_flight.pop(out.request_id)
            result = {
                "v": 1,
                "id": header["id"],
                "finish_reason": out.finish_reason.value,
                "deliveries": 1,
                "worker": "naive",
                "submitted_at": header["submitted_at"],
                "started_at": header["submitted_at"],
                "finished_at": now,
                "error": out.error,
            }
            pipe.xadd(RESULTS, {"h": orjson.dumps(result), "t": array("I", out.tokens).tobytes()})
            pipe.xack(STREAM, GROUP, entry_id)
        pipe.execute()
        num_done += len(outputs)
    serve_s = time.monotonic() - started
    return {"serve_s": serve_s, "engine": asdict(engine.stats()), "completed": num_done}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--batching", default="inflight", choices=["inflight", "static"])
    parser.add_argument("--expect", type=int, required=True)
    args = parser.parse_args()
    result = serve(args.url, args.manifest, args.batching, args.expect)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
