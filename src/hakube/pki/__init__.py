"""PKI: certificate authorities and leaf certificates, the kubeadm CA hash, etcd PKI."""
