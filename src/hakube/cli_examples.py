"""One example per command, shown at the end of its `--help` (kept apart from the commands so
that every command gets one and a test can check it)."""

from __future__ import annotations

import typer

#: Command path (as typed after `hakube`) → an example that works as printed.
EXAMPLES: dict[str, str] = {
    "schema": "hakube schema > cluster.schema.json",
    "validate": "hakube validate -f examples/tutorial.yaml --output json",
    "render": "hakube render -f cluster.yaml -d out/   # then read out/cp1/etc/haproxy/haproxy.cfg",
    "plan": "hakube plan -f cluster.yaml",
    "apply": "hakube apply -f cluster.yaml --dry-run && hakube apply -f cluster.yaml && "
    "hakube apply phase verify -f cluster.yaml",
    "version": "hakube version --output json",
    "node remove": "hakube node remove -f cluster.yaml cp2 --yes",
    "status": "hakube status -f cluster.yaml --output json",
    "join-command": "hakube join-command -f cluster.yaml --control-plane",
    "token list": "hakube token list -f cluster.yaml",
    "token revoke": "hakube token revoke abcdef -f cluster.yaml",
    "etcd snapshot save": "hakube etcd snapshot save -f cluster.yaml --keep 10",
    "etcd snapshot restore": "hakube etcd snapshot restore snap.db -f cluster.yaml",
    "certs check": "hakube certs check -f cluster.yaml",
    "certs renew": "hakube certs renew -f cluster.yaml",
    "reset": "hakube reset -f cluster.yaml --host w2",
    "kubeconfig": "hakube kubeconfig -f cluster.yaml --merge",
    "import kubespray": "hakube import kubespray inventory/mycluster -f cluster.yaml",
    "import kubeasz": "hakube import kubeasz /etc/kubeasz/clusters/k8s-01/hosts -f cluster.yaml",
}


def _name(info: typer.models.CommandInfo) -> str:
    if info.name:
        return info.name
    assert info.callback is not None
    return info.callback.__name__.lower().replace("_", "-")


def attach(app: typer.Typer, examples: dict[str, str], prefix: str = "") -> None:
    """Set the epilog of every command of `app` (and its groups) that has an example."""
    for info in app.registered_commands:
        path = f"{prefix}{_name(info)}"
        if info.epilog is None and path in examples:
            info.epilog = f"Example: {examples[path]}"
    for group in app.registered_groups:
        if group.typer_instance is not None and group.name:
            attach(group.typer_instance, examples, f"{prefix}{group.name} ")
