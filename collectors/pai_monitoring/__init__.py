"""pai-monitoring: the job-exporter and watchdog collectors of a GPU cluster's monitoring suite."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pai-monitoring")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
