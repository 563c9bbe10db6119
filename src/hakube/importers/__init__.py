"""Importers: kubespray and kubeasz inventories → a hakube cluster file (with notes).

The names below load on first use: the CLI mounts `hakube import` at start-up, and the
importers pull in the cluster model (pydantic), which `hakube --help` must not pay for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hakube.importers.common import Imported, Notes, render_and_check
    from hakube.importers.inventory import InventoryError
    from hakube.importers.kubeasz import import_kubeasz
    from hakube.importers.kubespray import import_kubespray

_HOME = {
    "Imported": "common",
    "Notes": "common",
    "render_and_check": "common",
    "InventoryError": "inventory",
    "import_kubeasz": "kubeasz",
    "import_kubespray": "kubespray",
}

__all__ = [
    "Imported",
    "InventoryError",
    "Notes",
    "import_kubeasz",
    "import_kubespray",
    "render_and_check",
]


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(name)
    return getattr(importlib.import_module(f"hakube.importers.{_HOME[name]}"), name)
