"""How hakube reaches hosts: the Transport protocol, its asyncssh implementation and a fake.

Phases depend only on ``Transport`` and the errors here; ``connect_all`` builds real ones and
``hakube.transport.scripted.ScriptedTransport`` stands in for them in unit tests.
"""

from hakube.transport.base import (
    AuthFailed,
    CommandFailed,
    CommandResult,
    CommandTimeout,
    ConnectError,
    ConnectionRefused,
    ConnectTimeout,
    HostKeyMismatch,
    HostKeyUnknown,
    Redactor,
    RemoteFileNotFound,
    Transport,
    TransportError,
)
from hakube.transport.connect import connect
from hakube.transport.pool import SSHPool, connect_all
from hakube.transport.ssh import SSHTransport
from hakube.transport.target import SSHTarget

__all__ = [
    "AuthFailed",
    "CommandFailed",
    "CommandResult",
    "CommandTimeout",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionRefused",
    "HostKeyMismatch",
    "HostKeyUnknown",
    "Redactor",
    "RemoteFileNotFound",
    "SSHPool",
    "SSHTarget",
    "SSHTransport",
    "Transport",
    "TransportError",
    "connect",
    "connect_all",
]
