"""kubespray/kubeasz inventories in the shapes those projects ship → a cluster file that validates.

The inventories under tests/data/importers/ are written for these tests in the shapes of
kubespray's inventory/sample (inventory.ini, hosts.yaml, group_vars/) and kubeasz's
example/hosts.* (3.x and 2.x group spellings); none is copied from those projects.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from hakube.cli import app
from hakube.importers import (
    Imported,
    InventoryError,
    import_kubeasz,
    import_kubespray,
    render_and_check,
)
from hakube.importers.inventory import read_ini
from hakube.spec import load_cluster_file
from hakube.spec.model import Cluster

DATA = Path(__file__).resolve().parents[1] / "data" / "importers"
runner = CliRunner()


def checked(imported: Imported, command: str = "hakube import test") -> tuple[str, Cluster]:
    text, loaded = render_and_check(imported, command)
    return text, loaded.cluster


def test_kubespray_ini_with_group_vars_maps_hosts_addresses_and_cluster_settings() -> None:
    text, c = checked(import_kubespray(DATA / "kubespray-ini"))
    assert [h.name for h in c.control_planes] == ["cp-a", "cp-b", "cp-c"]
    assert [h.name for h in c.workers] == ["work-a", "work-b"]
    cp_a = c.host("cp-a")
    # `ip` is the cluster address; ansible_host (a public address here) is only for SSH.
    assert str(cp_a.address) == "172.22.0.11"
    assert str(cp_a.ssh_address) == "203.0.113.11"
    assert c.host("work-a").ssh_address is None
    assert c.ssh.user == "deploy"
    assert c.ssh_for(c.host("work-b")).user == "ops"
    assert c.kubernetes.version == "1.29.4"
    assert c.kubernetes.cni.plugin.value == "calico"
    assert str(c.network.pod_subnet) == "10.200.0.0/16"
    assert str(c.network.service_subnet) == "10.96.0.0/16"
    assert c.kubernetes.dns_domain == "cluster.local"  # through "{{ cluster_name }}"
    assert c.kubernetes.image_repository.startswith("registry.cn-hangzhou")
    assert c.etcd.topology.value == "external"
    assert c.etcd.data_dir == "/data/etcd"
    # kubespray's localhost balancer on 6443 cannot share a host with kube-apiserver.
    assert c.endpoint.mode.value == "local-lb"
    assert c.endpoint.port == 8443
    assert "jump" not in {h.name for h in c.hosts}
    assert "# Not mapped" in text
    assert "kube_proxy_mode=ipvs: hakube leaves kube-proxy" in text
    assert "[bastion]: hakube has no such role" in text
    assert "loadbalancer_apiserver_healthcheck_port" in text  # listed as found, not used


def test_kubespray_hosts_yaml_external_lb_and_separate_etcd() -> None:
    text, c = checked(import_kubespray(DATA / "kubespray-yaml" / "hosts.yaml"))
    assert c.endpoint.mode.value == "cloud-lb"
    assert str(c.endpoint.lb_address) == "10.50.1.100"
    assert c.endpoint.lb_port == 8443
    assert c.api_name == "k8s-api.example.internal"
    assert [h.name for h in c.etcd_hosts] == ["etcd1", "etcd2", "etcd3"]
    assert c.host("etcd1").roles[0].value == "etcd"
    assert c.kubernetes.dns_domain == "corp.local"
    # Plugins and runtimes hakube does not install are named, never silently swapped.
    assert c.kubernetes.cni.plugin.value == "none"
    assert "kube_network_plugin=cilium: hakube installs calico or flannel only" in text
    assert c.kubernetes.runtime.value == "containerd"
    assert "container_manager=crio" in text


def test_kubespray_legacy_group_names_and_kubeadm_etcd() -> None:
    text, c = checked(import_kubespray(DATA / "kubespray-legacy"))
    assert [h.name for h in c.control_planes] == ["node1", "node2", "node3"]
    assert [h.name for h in c.workers] == ["node2", "node3", "node4"]
    assert c.etcd.topology.value == "stacked"  # etcd_kubeadm_enabled: true
    assert c.ssh_for(c.host("node4")).port == 2222
    assert c.ssh_for(c.host("node1")).port == 22
    assert "container_manager=docker: docker needs Kubernetes 1.23 or older" in text


def test_kubeasz_3x_hosts_with_ex_lb_and_config_yml() -> None:
    text, c = checked(import_kubeasz(DATA / "kubeasz-3x" / "hosts"))
    assert [h.name for h in c.control_planes] == ["master-01", "master-02", "master-03"]
    # k8s_nodename when set, else a name made from the address.
    assert [h.name for h in c.workers] == ["worker-01", "node-192-168-50-22"]
    assert [h.name for h in c.lb_hosts] == ["lb-192-168-50-6", "lb-192-168-50-7"]
    assert c.endpoint.mode.value == "vip"
    assert str(c.endpoint.vip) == "192.168.50.250"
    assert c.endpoint.port == 8443
    assert c.kubernetes.version == "1.30.5"  # K8S_VER from config.yml beside the hosts file
    assert c.kubernetes.cni.plugin.value == "flannel"
    assert str(c.network.pod_subnet) == "172.20.0.0/16"
    assert str(c.network.service_subnet) == "10.68.0.0/16"
    assert "192.168.50.11" not in {h.name for h in c.hosts}
    assert "[chrony]: hakube installs no such service" in text
    assert "LB_ROLE (master/backup)" in text


def test_kubeasz_2x_spellings_lb_on_masters_and_docker() -> None:
    text, c = checked(import_kubeasz(DATA / "kubeasz-2x"))
    assert len(c.control_planes) == 3
    assert {h.name for h in c.lb_hosts} == {"master-10-10-8-31", "master-10-10-8-32"}
    # EX_APISERVER_PORT=6443 on hosts that run kube-apiserver: the port actually used is 8443.
    assert c.endpoint.port == 8443
    assert "EX_APISERVER_PORT=6443: HAProxy cannot listen on 6443" in text
    assert c.kubernetes.dns_domain == "cluster.local"  # trailing dot dropped
    assert c.kubernetes.runtime.value == "containerd"
    assert "docker needs Kubernetes 1.23 or older" in text
    assert "K8S_VER (config.yml): not set" in text


def test_ini_reader_inline_comments_quotes_and_children() -> None:
    inv = read_ini(DATA / "kubespray-ini" / "inventory.ini")
    assert inv.hosts["cp-a"] == {
        "ansible_host": "203.0.113.11",
        "ip": "172.22.0.11",
        "etcd_member_name": "etcd1",
    }
    assert inv.members("etcd") == ["cp-a", "cp-b", "cp-c"]
    assert inv.members("k8s_cluster") == ["cp-a", "cp-b", "cp-c", "work-a", "work-b"]
    kubeasz = read_ini(DATA / "kubeasz-3x" / "hosts")
    assert kubeasz.groups["all"].vars["CLUSTER_CIDR"] == "172.20.0.0/16"
    assert kubeasz.hosts["192.168.50.11"]["k8s_nodename"] == "master-01"


BROKEN = [
    ("kubespray", "bad-section", "inventory.ini:1: cannot read the section header"),
    ("kubespray", "bad-yaml", "hosts.yaml:4: not valid YAML"),
    ("kubespray", "cycle", "group 'a' contains itself"),
    ("kubespray", "dns-host", "host node1: ansible_host is 'node1.example.com', not an IPv4"),
    ("kubespray", "group-vars-list", "all.yml: a variables file must be a mapping"),
    ("kubespray", "no-control-plane", "no control-plane hosts"),
    ("kubespray", "not-key-value", "inventory.ini:2: host 'node1': '10.0.0.1' is not key=value"),
    ("kubespray", "range", "host pattern 'node[1:3]' is a range"),
    ("kubespray", "uppercase", "host 'Node_1' (from inventory.ini) is not a lower-case"),
    ("kubeasz", "lb-disagree", "the [ex_lb] hosts disagree on EX_APISERVER_VIP"),
    ("kubeasz", "two-masters", "2 control-plane nodes is an even number"),
]


@pytest.mark.parametrize(("tool", "case", "message"), BROKEN, ids=[b[1] for b in BROKEN])
def test_broken_inventory_exits_2_names_the_problem_and_writes_nothing(
    tool: str, case: str, message: str, tmp_path: Path
) -> None:
    out = tmp_path / "cluster.yaml"
    res = runner.invoke(app, ["import", tool, str(DATA / "broken" / case), "-f", str(out)])
    assert res.exit_code == 2, res.output
    assert message in " ".join(res.stderr.split()), res.stderr
    assert "Nothing was written" in res.stderr
    assert not out.exists()


def test_importer_raises_inventory_error_for_a_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="no inventory file in this directory"):
        import_kubespray(tmp_path)
    with pytest.raises(InventoryError, match="no such file"):
        import_kubeasz(tmp_path / "hosts")


def test_cli_writes_a_file_that_validate_accepts(tmp_path: Path) -> None:
    out = tmp_path / "cluster.yaml"
    res = runner.invoke(
        app, ["import", "kubespray", str(DATA / "kubespray-ini"), "-f", str(out), "--name", "prod"]
    )
    assert res.exit_code == 0, res.output
    assert "3 control-plane, 2 worker" in res.stderr
    assert load_cluster_file(out).cluster.name == "prod"
    assert out.read_text().startswith("# Imported by `hakube import kubespray`")
    assert yaml.safe_load(out.read_text())["endpoint"]["port"] == 8443
    for command in ("validate", "plan"):
        res = runner.invoke(app, [command, "-f", str(out)])
        assert res.exit_code == 0, res.output


def test_cli_refuses_to_replace_a_file_without_force(tmp_path: Path) -> None:
    out = tmp_path / "cluster.yaml"
    out.write_text("mine\n")
    hosts = str(DATA / "kubeasz-3x" / "hosts")
    res = runner.invoke(app, ["import", "kubeasz", hosts, "-f", str(out)])
    assert res.exit_code == 2
    assert out.read_text() == "mine\n"
    res = runner.invoke(app, ["import", "kubeasz", hosts, "-f", str(out), "--force"])
    assert res.exit_code == 0, res.output
    assert load_cluster_file(out).cluster.endpoint.mode.value == "vip"


def test_cli_prints_to_stdout_with_dash(tmp_path: Path) -> None:
    res = runner.invoke(app, ["import", "kubeasz", str(DATA / "kubeasz-3x"), "-f", "-"])
    assert res.exit_code == 0, res.output
    assert yaml.safe_load(res.stdout)["name"] == "kubeasz-3x"


def test_cli_json_report_lists_what_mapped_and_what_did_not(tmp_path: Path) -> None:
    out = tmp_path / "c.yaml"
    hosts = str(DATA / "kubeasz-2x")
    res = runner.invoke(app, ["import", "kubeasz", hosts, "-f", str(out), "--output", "json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["written"] is True
    assert report["control_planes"] == [
        "master-10-10-8-31",
        "master-10-10-8-32",
        "master-10-10-8-33",
    ]
    assert any(m.startswith("CLUSTER_CIDR=172.20.0.0/16") for m in report["mapped"])
    assert any(n.startswith("PROXY_MODE=iptables") for n in report["not_mapped"])
    assert "base_dir" in report["unused"]
    bad = str(DATA / "broken" / "two-masters")
    res = runner.invoke(app, ["import", "kubeasz", bad, "-f", str(tmp_path / "x.yaml"),
                              "--output", "json"])  # fmt: skip
    assert res.exit_code == 2
    report = json.loads(res.stdout)
    assert report["written"] is False
    assert "even number" in report["problems"][0]["message"]
