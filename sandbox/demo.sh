#!/usr/bin/env bash
# make demo / make demo-down: a sandbox cluster of real systemd hosts on this machine, deployed by the site playbook.
#
# Usage: sandbox/demo.sh up [--monitoring 2] | down | status
#   up      prepare this machine (tests/hosts/setup.sh), create or reuse the guests pai-demo-ctl, pai-demo-gpu1,
#           pai-demo-gpu2 on the podman network pai-demo, deploy with pai.monitoring.site (from the collection
#           built from this checkout), print the URLs.
#           --monitoring 2 (make demo MONITORING=2) adds pai-demo-mon2 to the monitoring group: two Prometheus
#           replicas and an Alertmanager cluster, as the roles deploy any site with two monitoring hosts.
#   down    remove the guests, the network and .cache/sandbox/pai-demo.
#   status  list the guests and the health of every Prometheus target.
# Environment: PAI_DEMO_NAME (default pai-demo), PAI_DEMO_PORT_BASE (default 19000: Prometheus on 127.0.0.1:19090,
# Alertmanager on 127.0.0.1:19093). Needs root (podman, loop devices). See docs/demo.md.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
command=${1:-}
shift || true
case $command in
  up) ;;
  down | status) [[ $# == 0 ]] || { echo "usage: $0 $command (no options)" >&2; exit 2; } ;;
  *) echo "usage: $0 up [--monitoring 1|2] | down | status" >&2; exit 2 ;;
esac
if [[ $(id -u) != 0 ]]; then
  echo "$0: the sandbox needs root (podman containers with systemd, loop devices)" >&2
  exit 1
fi
exec python3 "$REPO/sandbox/sandbox.py" "$command" --name "${PAI_DEMO_NAME:-pai-demo}" \
  --port-base "${PAI_DEMO_PORT_BASE:-19000}" "$@"
