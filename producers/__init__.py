"""The submit-and-exit client: validate jobs, lane them, enqueue them once."""

from producers.client import BackpressureError, FabricClient, RedisMemoryError, SubmitReport
from producers.validation import InvalidJobsError, Job, JobError

__all__ = [
    "BackpressureError",
    "FabricClient",
    "InvalidJobsError",
    "Job",
    "JobError",
    "RedisMemoryError",
    "SubmitReport",
]
