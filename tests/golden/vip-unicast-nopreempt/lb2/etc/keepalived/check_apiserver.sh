# mode=0700 secret=False validate=None reload=None
#!/bin/sh
# Managed by hakube. keepalived health check: succeeds when the API answers /readyz through
# this host's HAProxy frontend, i.e. when the VIP would actually serve requests here.
# keepalived runs real-time and this script inherits it: normal scheduling first, so the check
# never competes with the adverts.
chrt -o -p 0 $$ 2>/dev/null
# 2 s: a lost SYN or TLS packet is resent after about 1 s, which must not fail a check.
curl -sfk --max-time 2 -o /dev/null https://127.0.0.1:6443/readyz && exit 0
# No answer. Before the first `kubeadm init` HAProxy sees every apiserver DOWN on all LB hosts
# alike: failing would leave nobody holding the VIP (a FAULT with nopreempt), so `kubeadm init`
# through it could never start. That exception ends once hakube recorded the init (marker file):
# afterwards every backend DOWN means this host lost its way to the API servers, so the VIP must
# move. A hung or stopped HAProxy does not answer its socket, and that always fails here.
[ -e /etc/hakube/initialised ] && exit 1
state=$(echo "show stat" | socat -t 1 stdio unix-connect:/run/haproxy/admin.sock 2>/dev/null \
  | awk -F, '$1 == "kube-apiserver" && $2 == "BACKEND" { print $18 }')
[ "$state" = "DOWN" ]
