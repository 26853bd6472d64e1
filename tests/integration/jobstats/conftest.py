"""Fixtures shared with the GPU and jobs tests: the simulated NVML library (a stand-in for GPUs) and its scenario
file, and a real Slurm-style job on real cgroups."""

from tests.integration.gpu.conftest import nvml_sim_lib, scenario
from tests.integration.jobs.conftest import slurm_job

__all__ = ["nvml_sim_lib", "scenario", "slurm_job"]
