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


def load_collector(entry: str) -> CollectorClass:
    """Import the collector class named by a ``module:Class`` entry."""
    module_name, _, class_name = entry.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
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
