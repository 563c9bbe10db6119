"""Validation of cluster files: every problem reported at once, each naming field and fix."""

from __future__ import annotations

import copy
import ipaddress
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from hakube.spec import Severity, SpecError, load_cluster_file, load_cluster_text
from hakube.spec.load import load_cluster_data
from hakube.spec.model import EndpointMode, KubeadmAPI

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def base(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "hakube/v1alpha1",
        "kind": "Cluster",
        "name": "t",
        "hosts": [
            {"name": "cp1", "address": "10.0.0.11", "roles": ["control-plane"]},
            {"name": "cp2", "address": "10.0.0.12", "roles": ["control-plane"]},
            {"name": "cp3", "address": "10.0.0.13", "roles": ["control-plane"]},
            {"name": "w1", "address": "10.0.0.21", "roles": ["worker"]},
        ],
        "endpoint": {"mode": "vip", "vip": "10.0.0.100"},
    }
    doc.update(over)
    return doc


#: pkgs.k8s.io starts at 1.24: older versions need a repository that carries them.
MIRROR = {"kubernetes_repository": "http://mirror.example/kubernetes"}


def problems_of(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(SpecError) as e:
        load_cluster_data(doc)
    return [str(p) for p in e.value.problems if p.severity is Severity.ERROR]


def one_problem(doc: dict[str, Any], path: str, *needles: str) -> str:
    probs = problems_of(doc)
    hits = [p for p in probs if f": {path}" in p]
    assert hits, f"no problem at {path}: {probs}"
    for n in needles:
        assert any(n in h for h in hits), f"{n!r} not in {hits}"
    return hits[0]


@pytest.mark.parametrize("name", ["tutorial", "aliyun", "local-lb"])
def test_examples_load(name: str) -> None:
    loaded = load_cluster_file(EXAMPLES / f"{name}.yaml")
    assert loaded.cluster.name == name


def test_valid_minimal_file_gets_defaults() -> None:
    c = load_cluster_data(base()).cluster
    assert c.endpoint.port == 8443
    assert c.endpoint.vrrp.version == 3
    assert [h.name for h in c.lb_hosts] == ["cp1", "cp2", "cp3"]
    assert c.control_plane_endpoint == "api.t.hakube.internal:8443"
    assert c.kubernetes.kubeadm_api is KubeadmAPI.V1BETA3


def test_duplicate_host_names_and_addresses_are_refused() -> None:
    doc = base()
    doc["hosts"][3]["name"] = "cp1"
    doc["hosts"][2]["address"] = "10.0.0.11"
    probs = problems_of(doc)
    assert any("hosts[3].name" in p and "'cp1' is used 2 times" in p for p in probs)
    assert any("hosts[2].address" in p and "10.0.0.11 is used by 2 hosts" in p for p in probs)


def test_vip_equal_to_a_host_address_is_refused() -> None:
    doc = base(endpoint={"mode": "vip", "vip": "10.0.0.12"})
    one_problem(doc, "endpoint.vip", "address of host 'cp2'", "pick an address no host uses")


def test_vip_outside_the_host_subnet_is_refused() -> None:
    doc = base(endpoint={"mode": "vip", "vip": "192.168.9.9"})
    one_problem(doc, "endpoint.vip", "outside the hosts' subnet 10.0.0.0/24", "fix:")


def test_two_control_planes_are_refused_with_split_brain_explanation() -> None:
    doc = base()
    doc["hosts"] = doc["hosts"][:2]
    msg = one_problem(doc, "hosts", "2 control-plane nodes is an even number", "split-brain")
    assert "quorum" in msg
    assert "1 or 3" in msg


def test_four_control_planes_are_refused() -> None:
    doc = base()
    doc["hosts"][3]["roles"] = ["control-plane"]
    one_problem(doc, "hosts", "4 control-plane nodes is an even number", "3 or 5")


def test_one_control_plane_needs_endpoint_mode_none() -> None:
    doc = base()
    doc["hosts"] = [doc["hosts"][0], doc["hosts"][3]]
    one_problem(doc, "hosts", "only one control-plane node", "endpoint.mode: none")
    doc["endpoint"] = {"mode": "none"}
    c = load_cluster_data(doc).cluster
    assert c.endpoint.mode is EndpointMode.NONE
    assert c.control_plane_endpoint.endswith(":6443")


def test_frontend_port_6443_on_shared_hosts_is_refused() -> None:
    doc = base(endpoint={"mode": "vip", "vip": "10.0.0.100", "port": 6443})
    one_problem(doc, "endpoint.port", "collides with kube-apiserver", "8443")


def test_frontend_port_6443_is_fine_on_dedicated_lb_hosts() -> None:
    doc = base(endpoint={"mode": "vip", "vip": "10.0.0.100", "port": 6443})
    doc["hosts"] += [
        {"name": "lb1", "address": "10.0.0.31", "roles": ["lb"]},
        {"name": "lb2", "address": "10.0.0.32", "roles": ["lb"]},
    ]
    c = load_cluster_data(doc).cluster
    assert [h.name for h in c.lb_hosts] == ["lb1", "lb2"]


def test_overlapping_subnets_are_refused() -> None:
    doc = base(network={"pod_subnet": "10.96.0.0/16", "service_subnet": "10.96.0.0/12"})
    one_problem(doc, "network.service_subnet", "overlaps", "disjoint")


def test_pod_subnet_over_the_hosts_is_refused() -> None:
    doc = base(network={"pod_subnet": "10.0.0.0/16"})
    probs = problems_of(doc)
    assert any("hosts[0].address" in p and "inside network.pod_subnet" in p for p in probs)


def test_subnet_with_host_bits_is_normalised_with_a_warning() -> None:
    loaded = load_cluster_data(
        base(network={"pod_subnet": "10.100.0.1/16", "service_subnet": "10.96.0.0/16"})
    )
    assert loaded.cluster.network.pod_subnet == ipaddress.IPv4Network("10.100.0.0/16")
    (w,) = loaded.warnings
    assert w.severity is Severity.WARNING
    assert w.path == "network.pod_subnet"
    assert "host bits" in w.message
    assert "10.100.0.0/16" in w.message


@pytest.mark.parametrize("rid", [0, 256, -1])
def test_router_id_outside_1_to_255_is_refused(rid: int) -> None:
    doc = base(endpoint={"mode": "vip", "vip": "10.0.0.100", "vrrp": {"router_id": rid}})
    one_problem(doc, "endpoint.vrrp.router_id", str(rid))


def test_unknown_keys_are_refused_with_a_suggestion() -> None:
    doc = base(endpoint={"mode": "vip", "vip": "10.0.0.100", "prot": 8443}, colour="blue")
    probs = problems_of(doc)
    assert any("endpoint.prot" in p and "did you mean 'port'" in p for p in probs)
    assert any("colour" in p and "unknown key" in p for p in probs)


@pytest.mark.parametrize("version", ["1.21.14", "1.35.0", "2.0.0"])
def test_kubernetes_version_outside_range_is_refused(version: str) -> None:
    one_problem(base(kubernetes={"version": version}), "kubernetes.version", "supported range")


def test_malformed_kubernetes_version_is_refused() -> None:
    one_problem(base(kubernetes={"version": "latest"}), "kubernetes.version", "1.30.4")


@pytest.mark.parametrize(
    ("version", "api"),
    [("1.22.3", "v1beta3"), ("1.30.4", "v1beta3"), ("1.31.0", "v1beta4"), ("1.34.1", "v1beta4")],
)
def test_kubeadm_api_follows_the_version(version: str, api: str) -> None:
    c = load_cluster_data(base(kubernetes={"version": version}, packages=MIRROR)).cluster
    assert c.kubernetes.kubeadm_api.value == api


def test_v1beta2_on_request_for_old_versions_only() -> None:
    ok = base(kubernetes={"version": "1.22.3", "config_api": "v1beta2"}, packages=MIRROR)
    assert load_cluster_data(ok).cluster.kubernetes.kubeadm_api is KubeadmAPI.V1BETA2
    bad = base(kubernetes={"version": "1.27.1", "config_api": "v1beta2"})
    one_problem(bad, "kubernetes.config_api", "removed in 1.27")


def test_docker_runtime_refused_from_1_24() -> None:
    one_problem(
        base(kubernetes={"version": "1.24.0", "runtime": "docker"}),
        "kubernetes.runtime",
        "removed in Kubernetes 1.24",
        "containerd",
    )
    load_cluster_data(base(kubernetes={"version": "1.23.17", "runtime": "docker"}, packages=MIRROR))


def test_unicast_needs_peers() -> None:
    doc = base(endpoint={"mode": "vip", "vip": "10.0.0.100", "vrrp": {"unicast": True}})
    doc["hosts"].append({"name": "lb1", "address": "10.0.0.31", "roles": ["lb"]})
    one_problem(doc, "endpoint.vrrp.unicast", "at least two LB hosts")


def test_cloud_lb_needs_an_lb_address() -> None:
    one_problem(base(endpoint={"mode": "cloud-lb"}), "endpoint.lb_address", "SLB")


def test_vip_mode_needs_a_vip() -> None:
    one_problem(base(endpoint={"mode": "vip"}), "endpoint.vip", "needs a virtual IP")


@pytest.mark.parametrize("n", [2, 4])
def test_external_etcd_needs_1_3_or_5_hosts(n: int) -> None:
    names = ["cp1", "cp2", "cp3", "w1"][:n]
    doc = base(etcd={"topology": "external", "hosts": names})
    one_problem(doc, "etcd.hosts", f"{n} members", "1, 3 or 5")


def test_external_etcd_defaults_to_control_planes() -> None:
    c = load_cluster_data(base(etcd={"topology": "external"})).cluster
    assert [h.name for h in c.etcd_hosts] == ["cp1", "cp2", "cp3"]


def test_etcd_hosts_must_exist() -> None:
    doc = base(etcd={"topology": "external", "hosts": ["cp1", "cp2", "nope"]})
    one_problem(doc, "etcd.hosts[2]", "'nope' is not a host")


def test_every_problem_is_reported_together() -> None:
    doc = base(endpoint={"mode": "vip", "vip": "10.0.0.11", "port": 6443})
    doc["hosts"][3]["name"] = "cp1"
    doc["network"] = {"pod_subnet": "10.96.0.0/16"}
    probs = problems_of(doc)
    paths = {p.split(":")[1].strip().split(" ")[0] for p in probs}
    assert {"endpoint.vip", "endpoint.port", "hosts[3].name", "network.service_subnet"} <= paths


def test_problems_carry_yaml_line_numbers() -> None:
    text = yaml.safe_dump(base(endpoint={"mode": "vip", "vip": "10.0.0.100", "port": 6443}))
    with pytest.raises(SpecError) as e:
        load_cluster_text(text)
    (p,) = [p for p in e.value.problems if p.path == "endpoint.port"]
    assert p.line is not None
    assert "port: 6443" in text.splitlines()[p.line - 1]


def test_invalid_yaml_names_the_line() -> None:
    with pytest.raises(SpecError) as e:
        load_cluster_text("apiVersion: hakube/v1alpha1\nhosts: [\n")
    assert e.value.problems[0].line is not None


def test_wrong_api_version_is_refused() -> None:
    one_problem(base(apiVersion="v1"), "apiVersion", "hakube/v1alpha1")


def test_ssh_key_file_expands_home() -> None:
    c = load_cluster_data(base(ssh={"key_file": "~/.ssh/id"})).cluster
    assert c.ssh.key_file is not None
    assert "~" not in str(c.ssh.key_file)


def test_host_ssh_overrides_merge_with_cluster_defaults() -> None:
    doc = base(ssh={"user": "ops", "port": 2222})
    doc["hosts"][0]["ssh"] = {"port": 22}
    c = load_cluster_data(doc).cluster
    s = c.ssh_for(c.hosts[0])
    assert (s.user, s.port, s.use_sudo) == ("ops", 22, True)


def test_cloud_lb_resolves_name_locally_on_control_planes() -> None:
    c = load_cluster_file(EXAMPLES / "aliyun.yaml").cluster
    assert str(c.endpoint_address_for(c.host("master1"))) == "127.0.0.1"
    assert str(c.endpoint_address_for(c.host("node1"))) == "172.16.0.100"
    assert c.lb_hosts == []


hostnames = st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True)


@settings(max_examples=150, deadline=None)
@given(
    names=st.lists(hostnames, min_size=1, max_size=7),
    octets=st.lists(st.integers(1, 254), min_size=1, max_size=7),
    mode=st.sampled_from(["vip", "cloud-lb", "local-lb", "none"]),
    vip=st.integers(1, 254),
    port=st.integers(1, 65535),
)
def test_fuzzed_specs_either_load_or_fail_with_located_problems(
    names: list[str], octets: list[int], mode: str, vip: int, port: int
) -> None:
    hosts = [
        {"name": n, "address": f"10.1.2.{o}", "roles": ["control-plane" if i < 3 else "worker"]}
        for i, (n, o) in enumerate(zip(names, octets, strict=False))
    ]
    doc = base(hosts=hosts, endpoint={"mode": mode, "port": port, "vip": f"10.1.2.{vip}"})
    try:
        loaded = load_cluster_data(doc)
    except SpecError as e:
        errors = [p for p in e.problems if p.severity is Severity.ERROR]
        assert errors
        for p in errors:
            assert p.message
    else:
        c = loaded.cluster
        assert len({h.name for h in c.hosts}) == len(c.hosts)
        assert len(c.control_planes) in (1, 3)


BAD_SPECS = sorted((Path(__file__).resolve().parents[1] / "data" / "bad-specs").glob("*.yaml"))
_EXPECT = re.compile(r"^# expect(-warning)?: (\S+?)(?: \(line (\d+)\))?: (.+)$")


def expectations(raw: bytes) -> list[tuple[Severity, str, int | None, str]]:
    """`# expect: PATH [(line N)]: TEXT` lines (and `# expect-warning:`), read from any file:
    the corpus holds binary and UTF-16 files on purpose."""
    text = raw.decode("utf-16") if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else raw.decode("latin-1")
    out = []
    for line in text.splitlines():
        m = _EXPECT.match(line)
        if m:
            sev = Severity.WARNING if m[1] else Severity.ERROR
            out.append((sev, m[2], int(m[3]) if m[3] else None, m[4]))
    return out


@pytest.mark.parametrize("path", BAD_SPECS, ids=[p.stem for p in BAD_SPECS])
def test_bad_file_is_refused_with_its_expected_message(path: Path) -> None:
    """Each file in tests/data/bad-specs names what it expects in `# expect: PATH: TEXT` lines."""
    expected = expectations(path.read_bytes())
    assert any(sev is Severity.ERROR for sev, *_ in expected), "a bad file expects an error"
    with pytest.raises(SpecError) as e:
        load_cluster_file(path)
    problems = e.value.problems
    for p in problems:
        assert p.path, f"empty field path: {p}"
        if p.severity is Severity.ERROR:
            assert p.hint, f"an error without a fix: {p}"
        assert "Input should be" not in p.message, p
    for sev, want_path, want_line, want_text in expected:
        hits = [p for p in problems if p.path == want_path and p.severity is sev]
        assert hits, [str(p) for p in problems]
        assert any(want_text in str(p) for p in hits), [str(p) for p in hits]
        if want_line is not None:
            assert any(p.line == want_line for p in hits if want_text in str(p)), hits
        top = want_path.split(".")[0].split("[")[0]
        if f"\n{top}:".encode() in path.read_bytes():  # a key the file has: its line is named
            assert all(p.line is not None for p in hits)


def test_a_file_of_several_megabytes_is_refused_by_its_size(tmp_path: Path) -> None:
    big = tmp_path / "dump.yaml"
    big.write_bytes(b"- not a cluster file\n" * 300_000)  # about 6 MB
    with pytest.raises(SpecError) as e:
        load_cluster_file(big)
    (p,) = e.value.problems
    assert p.path == "(file)"
    assert "larger than 256 KiB (at least 6,300,000 bytes)" in p.message
    assert p.hint


def bad_addresses(n: int) -> SpecError:
    """The error for a file of `n` workers whose addresses are all malformed."""
    doc = base()
    doc["hosts"] = [
        {"name": f"h{i}", "address": f"10.{i // 250}.{i % 250}.1x", "roles": ["worker"]}
        for i in range(n)
    ]
    with pytest.raises(SpecError) as e:
        load_cluster_data(doc)
    return e.value


def test_the_problems_shown_are_capped_with_a_count_of_the_rest() -> None:
    err = bad_addresses(120)
    assert len(err.problems) == 120
    assert len(err.shown) == 50
    assert err.more == 70
    assert str(err).endswith("and 70 more")


def test_a_utf8_byte_order_mark_is_fine(tmp_path: Path) -> None:
    f = tmp_path / "bom.yaml"
    f.write_bytes(b"\xef\xbb\xbf" + (EXAMPLES / "local-lb.yaml").read_bytes())
    assert load_cluster_file(f).cluster.name == "local-lb"


def test_keys_stay_the_text_written_not_yaml_booleans() -> None:
    doc = yaml.safe_dump(base()) + "colour: blue\n"
    text = doc.replace("hosts:\n", "hosts:\n").replace(
        "- address: 10.0.0.21", "- labels: {on: x}\n  address: 10.0.0.21"
    )
    loaded = load_cluster_text(text.replace("colour: blue\n", ""))
    assert loaded.cluster.host("w1").labels == {"on": "x"}


def test_a_missing_file_and_a_directory_are_problems_not_tracebacks(tmp_path: Path) -> None:
    for path, text in ((tmp_path / "nope.yaml", "No such file"), (tmp_path, "is a directory")):
        with pytest.raises(SpecError) as e:
            load_cluster_file(path)
        (p,) = e.value.problems
        assert p.path == "(file)"
        assert text in p.message
        assert p.hint


_junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


_FULL = base(
    ssh={"user": "ops", "port": 22, "key_file": "/dev/null", "connect_timeout": 5},
    kubernetes={"version": "1.30.4", "image_repository": "registry.k8s.io", "cni": {}},
    network={"pod_subnet": "10.244.0.0/16", "service_subnet": "10.96.0.0/12"},
    etcd={"topology": "external", "hosts": ["cp1", "cp2", "cp3"], "client_port": 2379},
    packages={"manager": "apt"},
)
_FULL["hosts"][3]["labels"] = {"zone": "a"}
_FULL["endpoint"]["vrrp"] = {"router_id": 51, "advert_interval": 0.1}


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_broken_value_gives_located_problems_with_a_fix(data: st.DataObject) -> None:
    """Whatever value lands wherever, the result is a `SpecError` whose every error names a
    field and a fix in hakube's words (or the file loads): never a crash, never pydantic's."""
    doc = copy.deepcopy(_FULL)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(doc)))
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        parent[path[-1]] = data.draw(_junk)
    try:
        load_cluster_data(doc)
    except SpecError as e:
        for p in e.problems:
            assert p.path
            assert "Input should" not in p.message
            assert "Value error" not in p.message
            if p.severity is Severity.ERROR:
                assert p.hint, str(p)


def test_thousands_of_field_errors_are_counted_past_the_first_thousand() -> None:
    err = bad_addresses(1500)
    assert len(err.problems) == 1000
    assert err.error_count == 1500
    assert err.more == 1450
    assert [p.path for p in err.shown[:2]] == ["hosts[0].address", "hosts[1].address"]
