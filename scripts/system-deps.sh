#!/usr/bin/env bash
# Installs the Debian packages Bastion's tests and tools need, skipping what is present.
set -euo pipefail
need=()
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v softhsm2-util >/dev/null 2>&1 || need+=(softhsm2)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
# The edge profile (deploy/nginx): nginx with ModSecurity v3 and the OWASP Core Rule Set.
command -v nginx >/dev/null 2>&1 || need+=(nginx)
[ -e /usr/lib/nginx/modules/ngx_http_modsecurity_module.so ] || need+=(libnginx-mod-http-modsecurity)
[ -d /usr/share/modsecurity-crs ] || need+=(modsecurity-crs)
# Security testing: sqlmap (and its payload corpus), slowhttptest (slow clients).
command -v sqlmap >/dev/null 2>&1 || need+=(sqlmap)
command -v slowhttptest >/dev/null 2>&1 || need+=(slowhttptest)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${need[*]} (run as root or install them)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}"
