"""Turning a daemon's collector table (name to ``module:Class``) into collector classes.

The command that starts a daemon owns its table (``pai_monitoring.registry``) and hands it to the runtime, so the
runtime never imports the application's collectors by name. A collector's module is imported only here, when the
daemon is built; a disabled collector is never constructed.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from pai_monitoring.runtime.collector import Collector

CollectorClass = type[Collector[Any]]
CollectorTable = Mapping[str, str]
"""Collector name to the ``module:Class`` entry of its class, in the order the daemon lists them."""


class MissingDependencyError(ImportError):
    """A collector's module needs a Python package that is not installed (a daemon installed without its extra)."""


def load_collector(entry: str) -> CollectorClass:
    """Import the collector class named by a ``module:Class`` entry."""
    module_name, _, class_name = entry.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or "?"
        if missing.partition(".")[0] == __name__.partition(".")[0]:
            raise  # a module of this package missing is a broken installation, not a missing extra
        raise MissingDependencyError(
            f"{module_name} needs the Python package {missing!r}, which is not installed; install the daemon's "
            "extra: pip install 'pai-monitoring[gpu]' for pai-job-exporter, 'pai-monitoring[watchdog]' for "
            "pai-watchdog"
        ) from exc
    cls = getattr(module, class_name)
    if not (isinstance(cls, type) and issubclass(cls, Collector)):
        raise TypeError(f"{entry} is not a Collector subclass")
    return cls


def load_collectors(table: CollectorTable) -> dict[str, CollectorClass]:
    """The collector classes of a table, by collector name, in table order."""
    classes = {name: load_collector(entry) for name, entry in table.items()}
    for name, cls in classes.items():
        if cls.name != name:
            raise TypeError(f"collector table name {name!r} does not match {cls.__name__}.name {cls.name!r}")
    return classes
