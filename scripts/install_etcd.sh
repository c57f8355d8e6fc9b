#!/usr/bin/env bash
# Install etcd (the server, used by tests/test_store_etcd.py) for CI and developers.
# Idempotent and non-interactive: does nothing when etcd is already installed.
# Debian's etcd-server package puts the binary at /usr/bin/etcd; it also registers an etcd
# service, which stays stopped where systemd is not running (as in CI): tests start their own.
set -euo pipefail

if command -v etcd >/dev/null 2>&1 || [ -x /usr/bin/etcd ]; then
    echo "etcd already installed: $(command -v etcd || echo /usr/bin/etcd)"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends etcd-server >/dev/null

if ! [ -x /usr/bin/etcd ]; then
    echo "etcd-server installed but /usr/bin/etcd is missing" >&2
    exit 1
fi
version="$(/usr/bin/etcd --version)"
echo "installed ${version%%$'\n'*}"
