# mode=0700 secret=False validate=None reload=None
#!/bin/sh
# Managed by hakube. keepalived health check: succeeds only when the API answers /readyz
# through this host's HAProxy frontend, i.e. when the VIP would actually serve requests here.
exec curl -sfk --max-time 1 -o /dev/null https://127.0.0.1:16443/readyz
