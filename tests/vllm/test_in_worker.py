"""A worker in this process, serving from the session's vLLM engine.

The worker runs in a thread of its own (its asyncio loop, its engine thread)
against a real redis-server; its engine is an :class:`EngineProxy` onto the
shared engine, so vLLM is the real one without another 40 to 80 s start.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import redis

from engines.contract import Engine
from fabric_worker.broker.connection import connect_async
from fabric_worker.broker.namespace import init_namespace
from fabric_worker.broker.streams import Broker
from fabric_worker.dev.redis_server import RedisServer
from fabric_worker.wire.entries import decode_result
from fabric_worker.wire.fleet_config import FleetConfig
from fabric_worker.wire.keys import Keys
from fabric_worker.worker.options import ExitCode, WorkerOptions
from fabric_worker.worker.service import Worker
from producers import FabricClient, Job
from tests.integration.harness import num_pending, result_counts, wait_until
from tests.vllm.conftest import VOCAB
from tests.vllm.host import EngineHost, EngineProxy

pytestmark = pytest.mark.integration

LANE = 64
RUN_S = 120.0  # bound on one worker's run


@dataclass
class InProcessWorker:
    """``Worker.run()`` on a thread, its log lines kept."""

    url: str
    keys: Keys
    config: FleetConfig
    engine: Engine
    lines: list[str] = field(default_factory=list)
    code: list[ExitCode] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, name="worker", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        async def serve() -> ExitCode:
            client = connect_async(self.url)
            options = WorkerOptions(consumer="vllm-in-process", burst=True, log_every_s=1.0)
            broker = Broker(client, self.keys, options.consumer, retention_s=60)
            worker = Worker(
                broker, self.config, lambda: self.engine, options, log=self.lines.append
            )
            try:
                return await worker.run()
            finally:
                await client.aclose()

        self.code.append(asyncio.run(serve()))

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def wait(self) -> ExitCode:
        self._thread.join(RUN_S)
        assert not self._thread.is_alive(), f"worker still running:\n{self.log}"
        return self.code[0]


@pytest.fixture
def proxy(host: EngineHost) -> Iterator[EngineProxy]:
    engine = EngineProxy(host)
    yield engine
    engine.close()


def setup(server: RedisServer, keys: Keys, **config: object) -> tuple[redis.Redis, FleetConfig]:
    client = redis.Redis.from_url(server.url)
    fleet = FleetConfig(lanes=(LANE,), max_seq_len=2048, backlog_cap_tokens=10**9, **config)  # type: ignore[arg-type]
    init_namespace(client, keys, fleet)
    return client, fleet


def test_a_lost_lease_aborts_the_request_inside_vllm_and_nothing_is_written_twice(
    redis_server: RedisServer, keys: Keys, proxy: EngineProxy
) -> None:
    client, config = setup(redis_server, keys, vocab_size=VOCAB, lease_s=1.0)
    long_job = Job(tokens=list(range(16)), max_new_tokens=1900, id="long")
    FabricClient(client, keys.namespace).submit([long_job])
    # Held polls: in-process vLLM advances only inside step(), so the request
    # stays mid-generation until the gate opens.
    proxy.gate.clear()
    worker = InProcessWorker(redis_server.url, keys, config, proxy)
    wait_until(lambda: len(proxy.submitted) == 1, RUN_S, "the job to reach vLLM")
    ((entry_id, *_),) = [
        (p["message_id"], p)
        for p in client.xpending_range(keys.jobs(LANE), "workers", "-", "+", 10)
    ]
    # another consumer takes the entry: the worker's next renewal finds it gone
    client.xclaim(keys.jobs(LANE), "workers", "thief", 0, [entry_id], justid=True)
    wait_until(lambda: "lease lost on 1 entries" in worker.log, RUN_S, "the lease loss")
    wait_until(lambda: bool(proxy.cancelled), RUN_S, "the cancel to reach the engine")
    (cancelled_ids, num_unfinished), *_ = proxy.cancelled
    assert cancelled_ids == [proxy.submitted[0].request_id]
    assert num_unfinished == 0  # aborted inside vLLM, not just forgotten by us
    assert result_counts(client, keys, (LANE,)) == {}  # the loser wrote nothing
    # The thief never renews: once its lease runs out the worker reclaims the
    # entry and serves it again, to the end, once.
    proxy.gate.set()
    assert worker.wait() is ExitCode.OK, worker.log
    assert len(proxy.submitted) == 2
    assert result_counts(client, keys, (LANE,)) == {"long": 1}
    ((_, fields),) = client.xrange(keys.results(LANE))
    result = decode_result(fields)
    assert (len(result.tokens), result.finish_reason) == (1900, "length")
    assert num_pending(client, keys, (LANE,)) == 0


def test_jobs_vllm_cannot_serve_are_dead_lettered_with_its_reason(
    redis_server: RedisServer, keys: Keys, proxy: EngineProxy
) -> None:
    """A fleet checked wrongly: its vocab_size (2048) exceeds the model's (1024).

    The worker in this process builds its engine without create_engine's
    check, so ids the model has no row for get through the fabric's own
    checks; each such job fails alone, is retried, then dead-lettered.
    """
    client, config = setup(redis_server, keys, vocab_size=2 * VOCAB, lease_s=1.0, max_deliveries=2)
    good = [Job(tokens=[i, i + 1, i + 2], max_new_tokens=5, id=f"good{i}") for i in range(3)]
    bad_prompt = Job(tokens=[1, VOCAB + 476, 2], max_new_tokens=5, id="bad-prompt")
    bad_end = Job(tokens=[1, 2, 3], max_new_tokens=5, id="bad-end", end_id=VOCAB + 476)
    FabricClient(client, keys.namespace).submit([good[0], bad_prompt, good[1], bad_end, good[2]])
    worker = InProcessWorker(redis_server.url, keys, config, proxy)
    assert worker.wait() is ExitCode.OK, worker.log
    assert result_counts(client, keys, (LANE,)) == {job.id: 1 for job in good}
    errors = {fields[b"error"].decode(): fields for _, fields in client.xrange(keys.dlq(LANE))}
    assert len(errors) == 2, errors
    prompt_error = next(e for e in errors if "vocabulary" in e)
    assert "vllm: prompt token out of the model's vocabulary 0..1023" in prompt_error
    end_error = next(e for e in errors if "VLLMValidationError" in e)
    assert "stop_token_ids" in end_error and str(VOCAB + 476) in end_error
    for fields in errors.values():
        assert fields[b"deliveries"] == b"2"
        assert fields[b"reason"].startswith(b"engine failed it on each of 2 deliveries")
    assert client.get(keys.job(LANE, "bad-prompt")) == b"dead"
    assert client.get(keys.job(LANE, "bad-end")) == b"dead"
