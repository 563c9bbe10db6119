# mode=0700 secret=False validate=None reload=None
#!/bin/sh
# Managed by hakube. keepalived health check: succeeds when the API answers /readyz through
# this host's HAProxy frontend, i.e. when the VIP would actually serve requests here.
# keepalived runs real-time and this script inherits it: normal scheduling first, so the check
# never competes with the adverts.
chrt -o -p 0 $$ 2>/dev/null
# 2 s: a lost SYN or TLS packet is resent after about 1 s, which must not fail a check.
curl -sfk --max-time 2 -o /dev/null https://127.0.0.1:16443/readyz && exit 0
# No answer: fail, also when every apiserver is DOWN. The weight lowers every host alike then,
# so the owner keeps the VIP; and a host that comes back from isolation with nothing UP waits
# until its HAProxy serves before it takes the VIP back.
exit 1
