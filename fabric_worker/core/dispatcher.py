"""The decisions of one worker between its awaits, built once the engine's
capacity is known.

Every hop of a job is one call here and at most one batched broker call in
the worker's loops: plan the next read, accept what it claimed, admit into the
engine, finish what the engine returned, record what the complete script
answered, lose a lease. Pure: no await, no I/O; time is passed in.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from engines.contract import Capacity, EngineOutput, EngineRequest, FinishReason
from fabric_worker.core.admission import BudgetMarks, TokenBudget
from fabric_worker.core.classes import ClassQueue
from fabric_worker.core.counts import Counts
from fabric_worker.core.holdings import EntryKey, Held, Holdings
from fabric_worker.core.intake import Accepted, Limits, decode_all, judge
from fabric_worker.core.lanes import LaneChooser, LanePolicy
from fabric_worker.core.lifecycle import JobEvent, JobState
from fabric_worker.core.policy import DispatchPolicy
from fabric_worker.core.reads import ReadPlanner, arrival
from fabric_worker.core.sharing import SharedPrefixes
from fabric_worker.wire.bulk import encode_results
from fabric_worker.wire.claims import Claimed, Completion, DeadLetter, HandBack, Retry
from fabric_worker.wire.fleet_config import FleetConfig
from fabric_worker.wire.replies import CompleteReply


@dataclass(slots=True)
class Rejected:
    """What intake turned away, for one batched settle call."""

    dead_letters: list[DeadLetter] = field(default_factory=list)
    hand_backs: list[HandBack] = field(default_factory=list)


@dataclass(slots=True)
class Finished:
    """What became of a batch of engine outputs, for the broker to write."""

    written: list[Held] = field(default_factory=list)  # in the order of completions
    completions: list[Completion] = field(default_factory=list)
    retries: list[Retry] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)


class Dispatcher:
    """Budget, read-ahead queue, lane choice and holdings of one worker."""

    def __init__(
        self, config: FleetConfig, capacity: Capacity, policy: DispatchPolicy, *, consumer: str
    ) -> None:
        self.config = config
        self.capacity = capacity
        self.consumer = consumer
        marks = BudgetMarks.from_capacity(
            kv_cache_tokens=capacity.kv_cache_tokens,
            max_num_tokens=capacity.max_num_tokens,
            max_tps=policy.max_tps,
        )
        self.budget = TokenBudget(marks)
        # Read ahead one budget's worth by default (two in max-TPS mode): deep
        # enough to keep the engine fed while results are written.
        wait = policy.class_max_wait_s * (4 if policy.max_tps else 1)
        self.queue: ClassQueue[Held] = ClassQueue(
            max_tokens=policy.read_ahead * marks.high_water_tokens, max_wait_s=wait
        )
        self.chooser = LaneChooser(
            config.lanes, LanePolicy(max_wait_s=policy.lane_max_wait_s, max_tps=policy.max_tps)
        )
        self.holdings = Holdings()
        self.counts = Counts()
        self.limits = Limits(
            vocab_size=config.vocab_size,
            max_prompt_tokens=config.max_prompt_tokens,
            max_deliveries=config.max_deliveries,
            max_seq_len=capacity.max_seq_len,
            max_cost_tokens=marks.high_water_tokens,
            pads_prompts=capacity.pads_prompts,
        )
        self.arrival_order = (
            not capacity.pads_prompts if policy.arrival_order is None else policy.arrival_order
        )
        self.reads = ReadPlanner(self.chooser, self.queue, arrival_order=self.arrival_order)
        shares = policy.share_prefixes
        if shares is None:
            shares = not capacity.pads_prompts
        self.sharing = SharedPrefixes(capacity.kv_block_tokens) if shares else None
        self.engine_cap = policy.engine_cap(capacity.max_batch_size)
        self.is_admitting = True
        self._request_ids = itertools.count(1)

    def describe(self) -> str:
        c, marks = self.capacity, self.budget.marks
        return (
            f"engine capacity batch={c.max_batch_size} step_tokens={c.max_num_tokens} "
            f"kv_tokens={c.kv_cache_tokens} max_seq_len={c.max_seq_len}; budget "
            f"high={marks.high_water_tokens} low={marks.low_water_tokens} tokens; read-ahead "
            f"{self.queue.max_tokens} tokens; at most {self.engine_cap} requests in the engine; "
            f"lanes {','.join(map(str, self.config.lanes))}"
        )

    @property
    def is_idle(self) -> bool:
        """Nothing held, nothing queued."""
        return not self.holdings and not self.queue

    def stop_admitting(self) -> None:
        """A stop: what is queued is handed back, not started."""
        self.is_admitting = False

    def unheld(self, claimed: Iterable[Claimed]) -> list[Claimed]:
        return [c for c in claimed if (c.lane, c.entry_id) not in self.holdings]

    # --- intake and admission ------------------------------------------------------

    def accept(self, claimed: Sequence[Claimed], now_s: float, now_unix: float) -> Rejected:
        """Queue what can be served; say what to dead-letter and hand back."""
        rejected = Rejected()
        fresh = self.unheld(claimed)  # a held one: our own entry, reclaimed after a stall
        if self.arrival_order:
            fresh.sort(key=lambda c: arrival(c.entry_id))
        for c, decoded in zip(fresh, decode_all(fresh, self.limits), strict=True):
            verdict = judge(c, self.limits, can_queue=self.queue.can_push, decoded=decoded)
            if isinstance(verdict, DeadLetter):
                rejected.dead_letters.append(verdict)
                self.counts.dead_lettered += 1
            elif isinstance(verdict, HandBack):
                rejected.hand_backs.append(verdict)
            else:
                self._enqueue(verdict, now_s, now_unix)
        return rejected

    def _enqueue(self, a: Accepted, now_s: float, now_unix: float) -> None:
        c, job = a.claimed, a.job
        held = Held(c.lane, c.entry_id, job, a.cost_tokens, a.budget_tokens, c.deliveries, now_unix)
        self.holdings.add(held)
        held.step(JobEvent.ENQUEUED)
        self.queue.push(held, cls=job.prefix_class, cost_tokens=a.budget_tokens, now_s=now_s)
        self.reads.observe(c.lane, job.max_new_tokens)

    def admit(self, now_s: float) -> list[EngineRequest]:
        """What the budget admits now, keeping at most ``engine_cap`` in the engine."""
        requests: list[EngineRequest] = []
        if not self.is_admitting:
            return requests
        while self.holdings.num_in_engine < self.engine_cap:
            held = self.queue.peek(now_s)
            if held is None:
                break
            job = held.job
            cls, sharing = job.prefix_class, self.sharing
            discount = sharing.discount(cls, job.tokens) if sharing else 0
            if not self.budget.try_admit(held.budget_tokens - discount):
                break
            self.queue.pop(now_s)
            held.budget_tokens -= discount
            if sharing and (moved := sharing.admitted(cls, held, job.tokens, discount)):
                first = sharing.first_of(cls)
                if not isinstance(first, Held):  # pragma: no cover - discount() checks it
                    raise RuntimeError("a shared prefix was pinned with no first job in flight")
                first.budget_tokens -= moved
            request_id = next(self._request_ids)
            self.holdings.start(held, request_id)
            requests.append(
                EngineRequest(
                    request_id=request_id,
                    prompt=job.tokens,
                    max_new_tokens=job.max_new_tokens,
                    end_id=job.end_id,
                    prefix_class=job.prefix_class,
                    pad_to=held.lane,
                )
            )
        return requests

    # --- finishing ---------------------------------------------------------------

    def finish(self, outputs: Iterable[EngineOutput], now_unix: float) -> Finished:
        """Release the budget of each output and decide what to write."""
        finished = Finished()
        done: list[EngineOutput] = []  # the outputs of finished.written, in its order
        for out in outputs:
            held = self.holdings.finish(out.request_id)
            if held is None:
                raise RuntimeError(f"engine returned unknown request {out.request_id}")
            self.budget.release(held.budget_tokens)
            if self.sharing and (pinned := self.sharing.finished(held.job.prefix_class, held)):
                self.budget.release(pinned)
            if held.state is JobState.LOST:
                self.counts.lease_lost += 1
            elif out.finish_reason is FinishReason.CANCELLED:
                # Cancelled at teardown: leave it pending, another worker reclaims it.
                self.holdings.drop(held, JobEvent.ABANDONED)
            elif out.finish_reason is FinishReason.ERROR:
                held.step(JobEvent.ENGINE_DONE)
                self._failed(held, out.error or "engine error", finished)
            else:
                held.step(JobEvent.ENGINE_DONE)
                finished.written.append(held)
                done.append(out)
        finished.completions = self._completions(finished.written, done, now_unix)
        return finished

    def _completions(
        self, written: list[Held], done: list[EngineOutput], now_unix: float
    ) -> list[Completion]:
        encoded = encode_results(
            ids=[h.job.id for h in written],
            tokens=[out.tokens for out in done],
            finish_reasons=[out.finish_reason.value for out in done],
            deliveries=[h.deliveries for h in written],
            submitted_at=[h.job.submitted_at for h in written],
            started_at=[h.claimed_at for h in written],
            finished_at=now_unix,
            batches=[h.job.batch for h in written],
            worker=self.consumer,
        )
        return [
            Completion(h.lane, h.entry_id, h.job.id, h.cost_tokens, header, tokens, h.job.batch)
            for h, (header, tokens) in zip(written, encoded, strict=True)
        ]

    def _failed(self, held: Held, error: str, finished: Finished) -> None:
        """Retry through reclaim until max_deliveries, then dead-letter with the error."""
        if held.deliveries >= self.config.max_deliveries:
            self.holdings.drop(held, JobEvent.DEAD_LETTERED)
            reason = f"engine failed it on each of {held.deliveries} deliveries"
            finished.dead_letters.append(
                DeadLetter(
                    lane=held.lane,
                    entry_id=held.entry_id,
                    job_id=held.job.id,
                    cost_tokens=held.cost_tokens,
                    reason=reason,
                    deliveries=held.deliveries,
                    error=error,
                    batch=held.job.batch,
                )
            )
            self.counts.dead_lettered += 1
        else:
            self.holdings.drop(held, JobEvent.ATTEMPT_FAILED)
            # Idle past the lease: the next reclaim, by anyone, takes it at once.
            idle_ms = int(self.config.lease_s * 1000) * 2
            finished.retries.append(Retry(held.lane, held.entry_id, idle_ms))
            self.counts.retried += 1

    def committed(self, written: Sequence[Held], replies: Sequence[CompleteReply]) -> None:
        """Record what the complete script said for each written result."""
        for held, reply in zip(written, replies, strict=True):
            ok = reply is CompleteReply.OK
            self.holdings.drop(held, JobEvent.COMMITTED if ok else JobEvent.ALREADY_DONE)
            self.counts.count_completion(ok=ok)

    # --- leases and stopping ---------------------------------------------------------

    def lose(self, lost: set[EntryKey]) -> tuple[list[int], int]:
        """Entries another worker now owns: (engine requests to cancel, number lost)."""
        self.queue.remove_if(lambda h: h.key in lost)
        cancels: list[int] = []
        num_lost = 0
        for key in lost:
            held = self.holdings.get(key)
            if held is None or held.state is JobState.FINISHED:
                # Completed (or being written) while the renewal was on its way:
                # not a lost lease; the complete script settles it.
                continue
            num_lost += 1
            was_running = held.state is JobState.RUNNING
            self.holdings.lose(held)
            if was_running and held.request_id is not None:
                cancels.append(held.request_id)  # counted when the engine returns it
            else:
                self.counts.lease_lost += 1
        return cancels, num_lost

    def release_unstarted(self) -> list[HandBack]:
        """A graceful stop: everything queued goes back to its lane."""
        self.stop_admitting()
        hand_backs = []
        for held in self.queue.drain():
            self.holdings.drop(held, JobEvent.RELEASED)
            hand_backs.append(HandBack(held.lane, held.entry_id, held.job.id))
        return hand_backs
