"""How a serving worker ends: gracefully (stop, drain, hand back) or after a
fatal error (cancel, flush, exit within the watchdog's deadline)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

from engines.contract import FinishReason
from fabric_worker.broker.heartbeat import publish as publish_status
from fabric_worker.core.lifecycle import WorkerEvent, WorkerState
from fabric_worker.worker.options import ExitCode

if TYPE_CHECKING:
    from fabric_worker.worker.loops import Serving


async def drain_gracefully(serving: Serving, tasks: list[asyncio.Task[None]]) -> None:
    """Stop claiming; hand back what was not started; finish the rest within
    the grace period; leave anything still running for reclaim."""
    host, dispatcher = serving.host, serving.dispatcher
    log, consumer = host.log, host.options.consumer
    ingress, drain, lease, reclaim, report, heartbeat = tasks
    await asyncio.gather(ingress, reclaim, report, heartbeat, return_exceptions=True)
    handed_back = await serving.broker.settle(hand_backs=dispatcher.release_unstarted())
    if handed_back.num_handed_back:
        log(f"worker {consumer}: handed back {handed_back.num_handed_back} unstarted entries")
    deadline = time.monotonic() + host.options.grace_s
    holdings = dispatcher.holdings
    while holdings and time.monotonic() < deadline and host.exit_code is ExitCode.OK:
        serving.room.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(serving.room.wait(), max(0.0, deadline - time.monotonic()))
    if holdings:
        log(f"worker {consumer}: grace period over, {len(holdings)} entries left for reclaim")
    serving.engine.stop()
    await asyncio.to_thread(serving.engine.join, 5.0)
    for task in (drain, lease):
        task.cancel()
    await asyncio.gather(drain, lease, return_exceptions=True)
    if host.state is WorkerState.DRAINING:
        host.step(WorkerEvent.DRAINED)


# Kept back from the watchdog's deadline for what follows a fatal teardown: the last
# heartbeat (at most 1 s) and the exit line, which the watchdog's os._exit would cut.
AFTER_TEARDOWN_S = 1.5


async def tear_down(serving: Serving, tasks: list[asyncio.Task[None]]) -> None:
    """Fatal: stop ingress and admission, cancel engine work, flush finished
    results (broker permitting), exit. The watchdog bounds all of it; each wait
    here takes only what is left of its deadline, so the exit line gets out."""
    deadline = time.monotonic() + serving.options.teardown_deadline_s - AFTER_TEARDOWN_S

    def left(most_s: float) -> float:
        return max(0.0, min(most_s, deadline - time.monotonic()))

    ingress, drain, lease, reclaim, report, heartbeat = tasks
    for task in (ingress, reclaim, report, lease, heartbeat):
        task.cancel()
    serving.engine.stop()
    await asyncio.to_thread(serving.engine.join, left(2.0))
    drain.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if serving.host.exit_code is not ExitCode.BROKER:
        outbox = serving.engine.outbox
        outputs = outbox.take(outbox.qsize())
        done = (FinishReason.LENGTH, FinishReason.STOP)
        finished = [o for o in outputs if o.finish_reason in done]
        if finished:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(serving.handle_outputs(finished), left(2.0))


async def last_heartbeat(serving: Serving) -> None:
    # Say how it ended (stopped or failed) so probes and `top` see it at once;
    # best effort: when Redis is what failed, there is nobody to tell.
    with contextlib.suppress(Exception):
        status = serving.telemetry.status(serving.snapshot())
        broker = serving.broker
        await asyncio.wait_for(publish_status(broker.redis, broker.keys, status), 1.0)
