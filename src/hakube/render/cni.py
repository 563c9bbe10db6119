"""CNI manifests patched with the cluster's real pod subnet.

The tutorial runs `sed s#192.168.0.0/16#${pod_SUBNET}#` with a variable it never set, which
writes an empty CIDR into calico. Here the subnet comes from the validated spec, and a manifest
whose expected setting cannot be found is an error rather than a silent no-op.
"""

from __future__ import annotations

import re

from hakube.spec.model import CNIPlugin


class ManifestError(ValueError):
    pass


_FLANNEL_NET = re.compile(r'("Network":\s*")([0-9./]+)(")')
_CALICO_CIDR = re.compile(
    r'^(?P<indent>[ \t]*)#?[ \t]*- name: CALICO_IPV4POOL_CIDR\n(?P=indent)#?[ \t]*value: "[^"]*"',
    re.MULTILINE,
)


def patch_manifest(plugin: CNIPlugin, text: str, pod_subnet: str) -> str:
    if plugin is CNIPlugin.FLANNEL:
        patched, n = _FLANNEL_NET.subn(rf"\g<1>{pod_subnet}\g<3>", text)
        if n == 0:
            raise ManifestError('flannel manifest has no net-conf.json "Network" to set')
        return patched
    if plugin is CNIPlugin.CALICO:

        def repl(m: re.Match[str]) -> str:
            indent = m.group("indent")
            return f'{indent}- name: CALICO_IPV4POOL_CIDR\n{indent}  value: "{pod_subnet}"'

        patched, n = _CALICO_CIDR.subn(repl, text)
        if n == 0:
            raise ManifestError("calico manifest has no CALICO_IPV4POOL_CIDR setting to set")
        return patched
    return text
