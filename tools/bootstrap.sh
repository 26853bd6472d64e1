#!/usr/bin/env bash
# Install what the tests need on a fresh Debian 12 machine (as root), then the project's virtualenv.
#
# Idempotent and quick on a second run. It says what it will change on this machine before it changes it. Packaged
# daemons (prometheus, alertmanager, node_exporter, victoria-metrics) are installed for their binaries only: a
# policy-rc.d that exists only while apt-get runs keeps them from starting on this host (the tests run them by hand
# on 127.0.0.1); nothing of it is left afterwards.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$REPO/.venv}
POLICY=/usr/sbin/policy-rc.d
POLICY_MARK="# pai-monitoring tests: do not start packaged daemons on this host"

APT_PACKAGES=(
  prometheus prometheus-alertmanager prometheus-node-exporter victoria-metrics
  podman runc crun debootstrap systemd-container uidmap slirp4netns openssh-client
  gcc libc6-dev make openssl busybox-static iproute2 procps util-linux python3-venv python3-apt
)

log() { printf 'bootstrap: %s\n' "$*" >&2; }

# The policy is ours only when we wrote it; one that was there before stays, and decides.
remove_our_policy() {
  if [[ -f $POLICY ]] && grep -qxF "$POLICY_MARK" "$POLICY"; then
    rm -f "$POLICY"
  fi
}

if [[ $(id -u) -eq 0 ]]; then
  # An earlier version of this script left its policy behind: take it away.
  if [[ -f $POLICY ]] && grep -qxF "$POLICY_MARK" "$POLICY" && ! pgrep -x apt-get >/dev/null; then
    log "removing $POLICY, left by an earlier version of this script"
    remove_our_policy
  fi
  missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    log "this machine will change: the Debian packages ${missing[*]} will be installed (apt-get; remove with \
apt-get purge). Their daemons are not started: $POLICY exists only while apt-get runs."
    if [[ ! -e $POLICY ]]; then
      trap remove_our_policy EXIT
      printf '#!/bin/sh\n%s\nexit 101\n' "$POLICY_MARK" > "$POLICY"
      chmod +x "$POLICY"
    fi
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
    remove_our_policy
    trap - EXIT
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
