"""The simulated NVML library (a stand-in for GPUs) and its scenario file, as the GPU tests have them."""

from tests.integration.gpu.conftest import nvml_sim_lib, scenario

__all__ = ["nvml_sim_lib", "scenario"]
