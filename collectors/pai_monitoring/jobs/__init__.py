"""The ``jobs`` collector: jobs and containers found from the kernel's cgroups and ``/proc``, not from a daemon.

Modules, in the order a cycle uses them (``docs/jobs.md`` explains identity, GPU attribution and counters):

* :mod:`.kernel` reads the kernel: hierarchies, cgroup files, ``/proc`` (every read capped, none can hang);
* :mod:`.layouts` says which cgroup directories are containers, Slurm jobs or services (pure naming rules);
* :mod:`.runtimes` (with :mod:`.docker_api`) asks the container runtimes and Slurm what they know;
* :mod:`.identity` names a unit's job from labels, runtime state, environment or Slurm;
* :mod:`.gpu_attribution` decides which GPUs a job uses and which unit each GPU process belongs to;
* :mod:`.derive` computes every exported value from the above, and :mod:`.metrics` declares the families;
* :mod:`.collector` runs the cycle.
"""
