"""The ``gpu`` collector: NVIDIA GPUs read through NVML (``pynvml``) in a supervised worker process.

NVML calls can block forever inside the driver, so they never run in the exporter's own process: a long-lived worker
(:mod:`pai_monitoring.gpu.worker`) makes them and sends back one :class:`~pai_monitoring.gpu.model.Snapshot` per
request. The parent (:mod:`pai_monitoring.gpu.supervisor`) kills and reaps a worker that misses its deadline and
starts a fresh one on the next iteration.
"""
