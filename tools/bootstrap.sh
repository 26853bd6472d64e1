#!/usr/bin/env bash
# Install what the tests need on a fresh Debian 12 machine (as root), then the project's virtualenv.
#
# Idempotent and quick on a second run. Packaged daemons (prometheus, alertmanager, node_exporter, victoria-metrics)
# are installed for their binaries only: a policy-rc.d keeps them from starting on this host, and the tests run
# them by hand on 127.0.0.1.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$REPO/.venv}

APT_PACKAGES=(
  prometheus prometheus-alertmanager prometheus-node-exporter victoria-metrics
  podman runc crun debootstrap systemd-container uidmap slirp4netns
  gcc libc6-dev make openssl busybox-static iproute2 procps util-linux
)

log() { printf 'bootstrap: %s\n' "$*" >&2; }

if [[ $(id -u) -eq 0 ]]; then
  missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
      printf '#!/bin/sh\n# pai-monitoring tests: do not start packaged daemons on this host\nexit 101\n' > /usr/sbin/policy-rc.d
      chmod +x /usr/sbin/policy-rc.d
    fi
    log "installing ${missing[*]}"
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
else
  log "not root: skipping apt packages (${APT_PACKAGES[*]})"
fi

if [[ ! -x $VENV/bin/python ]]; then
  log "creating $VENV"
  python3 -m venv "$VENV"
fi
stamp=$VENV/.pai-installed
if [[ ! -f $stamp || $REPO/pyproject.toml -nt $stamp ]]; then
  log "installing pai-monitoring and its developer tools into $VENV"
  "$VENV/bin/pip" install -q --upgrade 'pip>=25.1'
  "$VENV/bin/pip" install -q -e "$REPO[gpu,watchdog]" --group dev
  touch "$stamp"
fi
