"""The cluster spec: model, cross-field checks and loading."""

from hakube.spec.checks import Problem, Severity, check_cluster
from hakube.spec.load import Loaded, SpecError, dump_cluster, load_cluster_file, load_cluster_text
from hakube.spec.model import Cluster, EndpointMode, EtcdTopology, Host, Role

__all__ = [
    "Cluster",
    "EndpointMode",
    "EtcdTopology",
    "Host",
    "Loaded",
    "Problem",
    "Role",
    "Severity",
    "SpecError",
    "check_cluster",
    "dump_cluster",
    "load_cluster_file",
    "load_cluster_text",
]
