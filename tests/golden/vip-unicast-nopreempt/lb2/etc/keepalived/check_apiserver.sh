# mode=0700 secret=False validate=None reload=None
#!/bin/sh
# Managed by hakube. keepalived health check: succeeds when the API answers /readyz through
# this host's HAProxy frontend, i.e. when the VIP would actually serve requests here.
# 2 s: a lost SYN or TLS packet is resent after about 1 s, which must not fail a check.
curl -sfk --max-time 2 -o /dev/null https://127.0.0.1:6443/readyz && exit 0
# No answer. If HAProxy itself reports every apiserver DOWN (before `kubeadm init`, or the whole
# control plane down), all LB hosts see the same: moving the VIP cannot help, and failing would
# leave nobody holding it (a FAULT with nopreempt), so `kubeadm init` through the VIP could never
# start. A hung or stopped HAProxy does not answer its socket, and that still fails here.
state=$(echo "show stat" | socat -t 1 stdio unix-connect:/run/haproxy/admin.sock 2>/dev/null \
  | awk -F, '$1 == "kube-apiserver" && $2 == "BACKEND" { print $18 }')
[ "$state" = "DOWN" ]
