"""Importers: kubespray and kubeasz inventories → a hakube cluster file (with notes)."""

from hakube.importers.common import Imported, Notes, render_and_check
from hakube.importers.inventory import InventoryError
from hakube.importers.kubeasz import import_kubeasz
from hakube.importers.kubespray import import_kubespray

__all__ = [
    "Imported",
    "InventoryError",
    "Notes",
    "import_kubeasz",
    "import_kubespray",
    "render_and_check",
]
