#!/usr/bin/env bash
# Generates throw-away TLS material for the tests into the directory $1.
#
#   ca.crt/.key                 test CA ("l4lb test CA")
#   a.test, b.test, wild.test   server certs (wild.test carries *.wild.test)
#   default.test                the default certificate (no SNI / no match)
#   expired.test                validity 2020-01-01 .. 2020-01-02
#   future.test                 validity 2099-01-01 .. 2099-12-31 (not yet valid)
#   backend.test                backend server cert, signed by the test CA
#   client-ca.crt/.key          CA for mutual TLS clients
#   client1                     client cert, CN=client1, signed by client-ca
#   client-wrongca              client cert, CN=client2, signed by the *server* CA
#
# Every certificate is <name>.crt with its key in <name>.key (EC P-256, fast).
# Nothing produced here is of any value outside a test run; never commit it.
set -euo pipefail

if [ $# -ne 1 ] || [ -z "$1" ]; then
  echo "usage: $0 OUTPUT_DIR" >&2
  exit 2
fi
command -v openssl >/dev/null 2>&1 || { echo "$0: openssl not found" >&2; exit 3; }

out=$1
mkdir -p "$out"
cd "$out"
work=$(mktemp -d "./.gen.XXXXXX")
trap 'rm -rf "$work"' EXIT
umask 077

genkey() { # NAME
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null
}

selfsigned_ca() { # NAME CN
  genkey "$1"
  openssl req -new -x509 -key "$1.key" -subj "/O=l4lb tests/CN=$2" -days 3650 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$1.crt"
}

# openssl ca is the only portable way to set explicit notBefore/notAfter
# (expired and not-yet-valid certificates); a minimal throw-away database.
ca_conf() { # CA_NAME
  local d="$work/db-$1"
  mkdir -p "$d"
  : >"$d/index.txt"
  printf '1000\n' >"$d/serial"
  cat >"$d/ca.cnf" <<EOF
[ ca ]
default_ca = test_ca
[ test_ca ]
database = $d/index.txt
new_certs_dir = $d
serial = $d/serial
certificate = $PWD/$1.crt
private_key = $PWD/$1.key
default_md = sha256
policy = anything
unique_subject = no
copy_extensions = none
[ anything ]
organizationName = optional
commonName = supplied
EOF
  printf '%s\n' "$d/ca.cnf"
}

# leaf NAME CA SUBJECT_CN EXT_LINES START END
leaf() {
  local name=$1 ca=$2 cn=$3 ext=$4 start=$5 end=$6
  genkey "$name"
  openssl req -new -key "$name.key" -subj "/O=l4lb tests/CN=$cn" -out "$work/$name.csr"
  printf '%b\n' "$ext" >"$work/$name.ext"
  local conf
  conf=$(ca_conf "$ca")
  openssl ca -batch -notext -config "$conf" -in "$work/$name.csr" -out "$name.crt" \
    -extfile "$work/$name.ext" -startdate "$start" -enddate "$end" 2>/dev/null
}

now=$(date -u +%Y%m%d%H%M%SZ)
later=$(date -u -d '+825 days' +%Y%m%d%H%M%SZ 2>/dev/null || date -u -v+825d +%Y%m%d%H%M%SZ)
server_ext() { printf 'basicConstraints=CA:FALSE\\nkeyUsage=critical,digitalSignature\\nextendedKeyUsage=serverAuth\\nsubjectAltName=%s' "$1"; }
client_ext='basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth'

selfsigned_ca ca "l4lb test CA"
selfsigned_ca client-ca "l4lb test client CA"

leaf a.test       ca a.test       "$(server_ext DNS:a.test)"                       "$now" "$later"
leaf b.test       ca b.test       "$(server_ext DNS:b.test)"                       "$now" "$later"
leaf wild.test    ca "*.wild.test" "$(server_ext 'DNS:*.wild.test')"               "$now" "$later"
leaf default.test ca default.test "$(server_ext DNS:default.test)"                 "$now" "$later"
leaf backend.test ca backend.test "$(server_ext 'DNS:backend.test,IP:127.0.0.1')"  "$now" "$later"
leaf expired.test ca expired.test "$(server_ext DNS:expired.test)"  20200101000000Z 20200102000000Z
leaf future.test  ca future.test  "$(server_ext DNS:future.test)"   20990101000000Z 20991231000000Z
leaf client1        client-ca client1 "$client_ext" "$now" "$later"
leaf client-wrongca ca        client2 "$client_ext" "$now" "$later"

chmod 0644 ./*.crt
