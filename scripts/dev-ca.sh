#!/usr/bin/env bash
# Makes a development CA and certificates for Strata with the openssl CLI (docs/security.md):
#   scripts/dev-ca.sh DIR [NODE_ID...]
# DIR/ca.pem, ca.key          the cluster CA (node certificates and client certificates chain to it)
# DIR/NODE_ID.pem, .key       one node certificate per id: CN and DNS name = the node id, plus
#                             localhost and 127.0.0.1 (TLS_SAN="DNS:x,IP:y" adds names)
# DIR/client.pem, client.key  a client certificate (CN=client)
# DIR/etcd-client.pem, .key   a client certificate for etcd's JSON gateway: no common name (with
#                             auth enabled, etcd refuses gateway requests whose certificate has one)
# Keys are EC P-256, certificates valid DAYS (default 365) days. For development only: the CA key
# sits next to the certificates. An existing CA in DIR is reused, so more nodes can be added later.
set -euo pipefail
dir=${1:?usage: scripts/dev-ca.sh DIR [NODE_ID...]}
shift || true
ids=("$@")
[ ${#ids[@]} -gt 0 ] || ids=(node-1)
days=${DAYS:-365}
mkdir -p "$dir"
cd "$dir"
umask 077
if [ ! -f ca.pem ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
    -days "$days" -subj "/CN=strata-dev-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi
issue() { # NAME SAN EXTENDED_KEY_USAGE [SUBJECT]
  local name=$1 san=$2 usage=$3 subject=${4:-/CN=$1}
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$name.key" -out "$name.csr" \
    -subj "$subject" 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\nsubjectAltName=%s\n' \
    "$usage" "$san" >"$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -out "$name.pem" -days "$days" \
    -extfile "$name.ext" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
}
for id in "${ids[@]}"; do
  issue "$id" "DNS:$id,DNS:localhost,IP:127.0.0.1${TLS_SAN:+,$TLS_SAN}" "serverAuth,clientAuth"
done
issue client "DNS:client" "clientAuth"
issue etcd-client "DNS:etcd-client" "clientAuth" "/O=strata etcd client"
chmod 644 ./*.pem
echo "CA: $dir/ca.pem; nodes: ${ids[*]}; client: $dir/client.pem"
