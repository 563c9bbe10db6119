"""The local multi-host lab: systemd-nspawn hosts on an isolated bridge with an apt mirror.

Example::

    from hakube_lab import Lab, running_lab
    with running_lab("t1", control_planes=2, workers=0, subnet="10.123.9.0/24") as lab:
        lab.run("cp1", "hostname")
"""

from hakube_lab.addressing import LabError
from hakube_lab.lab import Lab, LabHost, destroy, running_lab

__all__ = ["Lab", "LabError", "LabHost", "destroy", "running_lab"]
