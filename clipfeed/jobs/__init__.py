"""Background jobs on Huey: SQLite-backed in-process by default, Redis-backed at scale."""

from clipfeed.jobs.queue import JobQueue, JobSpec, PeriodicSpec, job, periodic, run_async, sweeper

__all__ = ["JobQueue", "JobSpec", "PeriodicSpec", "job", "periodic", "run_async", "sweeper"]
