"""How hakube reaches hosts: the Transport protocol, its asyncssh implementation and a fake.

Phases depend only on `base.Transport` and the errors in `base`; `pool.connect_all` builds real
ones (`target`, `hostkeys`, `connect`, `ssh`, `sftp`) and `scripted.ScriptedTransport` stands in
for them in unit tests.
"""
