"""``pai-jobstats``: how a job used what it held, from Prometheus, after (or while) it ran.

Given a job (a PAI job name, a Kubernetes pod or a Slurm job id) it finds the job's series in Prometheus, the time
it ran and the GPUs it held, and reports GPUs held against used (utilisation, idle share, SM and tensor-core activity
where the GPU has NVML GPM), GPU memory peaks, CPU use, host memory against the limit and GPU energy, with hints in
plain language. It reads only Prometheus's HTTP API (:mod:`.prometheus`); what it asks is in :mod:`.queries`, the
figures and hints in :mod:`.report`, the text and JSON in :mod:`.render`, the command in :mod:`.cli`.
"""
