"""verify's readers (HAProxy `show stat`) and the CNI manifest patcher, on realistic input."""

from __future__ import annotations

import pytest

from hakube.facts.haproxy import Backend, parse_show_stat
from hakube.render.cni import ManifestError, patch_manifest
from hakube.spec.model import CNIPlugin

# The `show stat` columns of HAProxy 2.6, in order (management.txt, section 9.1).
COLUMNS = (
    "pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,"
    "wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,"
    "lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,"
    "hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,"
    "cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,"
    "ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,"
    "check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,"
    "conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,"
    "srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,"
    "safe_conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_status,agg_check_status,"
    "srid,sess_other,h1sess,h2sess,h3sess,req_other,h1req,h2req,h3req,proto"
)
FIELDS = COLUMNS.split(",")


def row(**values: str) -> str:
    """One CSV line as HAProxy prints it: every field followed by a comma."""
    assert set(values) <= set(FIELDS)
    return "".join(values.get(f, "") + "," for f in FIELDS)


def server(name: str, status: str, check: str, addr: str, **extra: str) -> str:
    return row(
        pxname="apiserver",
        svname=name,
        status=status,
        weight="1",
        act="1",
        bck="0",
        pid="1",
        iid="3",
        sid=extra.pop("sid", "1"),
        type="2",
        check_status=check,
        check_duration="0",
        check_desc="Layer4 check passed" if check.endswith("L4OK") else "Layer4 connection problem",
        check_rise="2",
        check_fall="2",
        addr=addr,
        mode="tcp",
        **extra,
    )


SHOW_STAT = (
    "# " + "".join(f + "," for f in FIELDS) + "\n"
    + row(pxname="apiserver", svname="FRONTEND", status="OPEN", pid="1", iid="2", type="0",
          mode="tcp") + "\n"
    + server("cp1", "UP", "L4OK", "10.88.0.11:6443", sid="1") + "\n"
    + server("cp2", "DOWN", "L4CON", "10.88.0.12:6443", sid="2", chkfail="3", chkdown="1") + "\n"
    + server("cp3", "UP 1/2", "* L4OK", "10.88.0.13:6443", sid="3") + "\n"
    + row(pxname="apiserver", svname="BACKEND", status="UP", weight="2", act="2", bck="0",
          pid="1", iid="3", type="1", mode="tcp", algo="roundrobin") + "\n"
    + "\n"
)  # fmt: skip


def test_show_stat_header_has_the_26_column_positions() -> None:
    assert FIELDS.index("status") == 17
    assert FIELDS.index("check_status") == 36
    assert SHOW_STAT.startswith("# pxname,svname,qcur,")


def test_parse_show_stat_returns_the_servers_with_status_and_check() -> None:
    assert parse_show_stat(SHOW_STAT, "cp1") == [
        Backend("cp1", "cp1", "UP", "L4OK"),
        Backend("cp1", "cp2", "DOWN", "L4CON"),
        Backend("cp1", "cp3", "UP 1/2", "* L4OK"),
    ]


def test_parse_show_stat_skips_short_lines_and_reads_nothing_from_errors() -> None:
    truncated = SHOW_STAT.splitlines()
    truncated[2] = truncated[2][:40]  # cut short mid-line (socket closed early)
    assert [b.server for b in parse_show_stat("\n".join(truncated), "cp1")] == ["cp2", "cp3"]
    assert parse_show_stat("", "cp1") == []
    assert (
        parse_show_stat("Unknown command. Please enter one of the following commands\n", "x") == []
    )


# --- CNI manifests -------------------------------------------------------------------------------

FLANNEL = """\
kind: ConfigMap
apiVersion: v1
metadata:
  name: kube-flannel-cfg
  namespace: kube-flannel
data:
  cni-conf.json: |
    {
      "name": "cbr0",
      "cniVersion": "0.3.1",
      "plugins": [ { "type": "flannel", "delegate": { "hairpinMode": true } } ]
    }
  net-conf.json: |
    {
      "Network": "10.244.0.0/16",
      "EnableNFTables": false,
      "Backend": {
        "Type": "vxlan"
      }
    }
"""

CALICO = """\
          env:
            # Enable IPIP
            - name: CALICO_IPV4POOL_IPIP
              value: "Always"
            # The default IPv4 pool to create on startup if none exists. Pod IPs will be
            # chosen from this range. Changing this value after installation will have
            # no effect. This should fall within `--cluster-cidr`.
            # - name: CALICO_IPV4POOL_CIDR
            #   value: "192.168.0.0/16"
            # Disable file logging so `kubectl logs` works.
            - name: CALICO_DISABLE_FILE_LOGGING
              value: "true"
"""


def test_flannel_network_is_set_to_the_pod_subnet() -> None:
    out = patch_manifest(CNIPlugin.FLANNEL, FLANNEL, "10.100.0.0/16")
    assert out == FLANNEL.replace('"Network": "10.244.0.0/16"', '"Network": "10.100.0.0/16"')
    assert patch_manifest(CNIPlugin.FLANNEL, out, "10.100.0.0/16") == out


def test_calico_commented_cidr_is_uncommented_and_set() -> None:
    out = patch_manifest(CNIPlugin.CALICO, CALICO, "10.100.0.0/16")
    assert out == CALICO.replace(
        '            # - name: CALICO_IPV4POOL_CIDR\n            #   value: "192.168.0.0/16"\n',
        '            - name: CALICO_IPV4POOL_CIDR\n              value: "10.100.0.0/16"\n',
    )


def test_calico_patch_of_an_already_set_cidr_keeps_the_yaml_intact() -> None:
    once = patch_manifest(CNIPlugin.CALICO, CALICO, "10.100.0.0/16")
    assert patch_manifest(CNIPlugin.CALICO, once, "10.100.0.0/16") == once


@pytest.mark.parametrize(
    ("plugin", "text", "what"),
    [
        (CNIPlugin.FLANNEL, FLANNEL.replace('"Network"', '"Netwrk"'), 'net-conf.json "Network"'),
        (CNIPlugin.CALICO, CALICO.replace("CALICO_IPV4POOL_CIDR", "CALICO_IPV6POOL_CIDR"), "CIDR"),
    ],
)
def test_manifest_without_the_setting_raises(plugin: CNIPlugin, text: str, what: str) -> None:
    with pytest.raises(ManifestError, match=what):
        patch_manifest(plugin, text, "10.100.0.0/16")
