"""pai-monitoring: the job-exporter and watchdog collectors of a GPU cluster's monitoring suite."""

__version__ = "0.1.0"
"""The one place the version is written: pyproject.toml reads it from here (``tool.setuptools.dynamic``). Asking
``importlib.metadata`` instead cost every daemon about 1 MiB of memory at start."""
