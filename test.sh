#!/usr/bin/env bash
# Runs every test. Installs what the tests need when it is missing: Debian's
# memcached (the reference the differential tests compare against),
# libmemcached-tools (memccapable, libmemcached's conformance checker) and
# python3-pymemcache (a real client, run with /usr/bin/python3) and
# sasl2-bin (saslpasswd2, so Debian's memcached -S can accept a test user
# and the SASL tests compare successful logins live), and iproute2 (ss,
# which shows a listening socket's backlog).
set -euo pipefail
cd "$(dirname "$0")"

need=()
command -v memcached >/dev/null 2>&1 || need+=(memcached)
command -v memccapable >/dev/null 2>&1 || need+=(libmemcached-tools)
/usr/bin/python3 -c 'import pymemcache' >/dev/null 2>&1 || need+=(python3-pymemcache)
command -v saslpasswd2 >/dev/null 2>&1 || need+=(sasl2-bin)
command -v ss >/dev/null 2>&1 || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  echo "test.sh: installing ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

go vet ./...
go test -race -count=1 -timeout 20m ./...
