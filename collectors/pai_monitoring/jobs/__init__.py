"""The ``jobs`` collector: jobs and containers found from the kernel's cgroups and ``/proc``, not from a daemon.

See ``docs/jobs.md`` for how identity, GPU attribution and per-job network counters work.
"""
