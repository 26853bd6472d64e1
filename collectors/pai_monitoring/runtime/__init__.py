"""The exporter runtime shared by ``pai-job-exporter`` and ``pai-watchdog``.

Collectors refresh in background threads on their own schedule; scrapes only read the latest snapshots.
"""
