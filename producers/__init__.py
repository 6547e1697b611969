"""The submit-and-exit client: validate jobs, lane them, enqueue them once."""

from fabric_worker.broker.submit import BatchCancelledError
from fabric_worker.wire.batch_record import BatchCounts
from producers.client import BackpressureError, FabricClient, RedisMemoryError, SubmitReport
from producers.validation import InvalidJobsError, Job, JobError
from producers.waiting import WaitTimeout

__all__ = [
    "BackpressureError",
    "BatchCancelledError",
    "BatchCounts",
    "FabricClient",
    "InvalidJobsError",
    "Job",
    "JobError",
    "RedisMemoryError",
    "SubmitReport",
    "WaitTimeout",
]
