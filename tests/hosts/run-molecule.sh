#!/usr/bin/env bash
# Run molecule scenarios on systemd guests and print one timing line per scenario.
#
# Usage: tests/hosts/run-molecule.sh [--prepare] [scenario ...]
#   no scenario: every directory under molecule/ that holds a molecule.yml, in name order.
#   --prepare: run tests/hosts/setup.sh first (apt packages, guest image, venv, wheelhouse).
# Environment: MOLECULE_COMMAND (default "test"), e.g. MOLECULE_COMMAND=converge to keep a guest for debugging.
# Exit status: 0 when every scenario passed, 1 otherwise; the summary names the ones that failed.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WORK=${WORK:-$REPO/.cache}
VENV=$WORK/molecule-venv
COMMAND=${MOLECULE_COMMAND:-test}

if [[ ${1:-} == --prepare ]]; then
  shift
  "$REPO/tests/hosts/setup.sh" || exit 1
fi
if [[ ! -x $VENV/bin/molecule ]]; then
  echo "run-molecule.sh: $VENV is missing: run tests/hosts/setup.sh first" >&2
  exit 1
fi

cd "$REPO" || exit 1
scenarios=("$@")
if ((${#scenarios[@]} == 0)); then
  for file in molecule/*/molecule.yml; do
    scenarios+=("$(basename "$(dirname "$file")")")
  done
fi

# molecule must run from an activated virtualenv (it calls ansible-config from PATH).
# shellcheck disable=SC1091
source "$VENV/bin/activate"
export ANSIBLE_ROLES_PATH=$REPO/roles ANSIBLE_COLLECTIONS_PATH=$REPO/.cache/collections
export PY_COLORS=0 ANSIBLE_FORCE_COLOR=0

failed=()
summary=()
total_start=$(date +%s)
for scenario in "${scenarios[@]}"; do
  if [[ ! -f molecule/$scenario/molecule.yml ]]; then
    echo "run-molecule.sh: no scenario molecule/$scenario" >&2
    failed+=("$scenario")
    continue
  fi
  start=$(date +%s)
  molecule --base-config molecule/base.yml "$COMMAND" -s "$scenario"
  rc=$?
  seconds=$(($(date +%s) - start))
  if ((rc == 0)); then result=passed; else result=FAILED; failed+=("$scenario"); fi
  line=$(printf 'molecule %-28s %-6s %4ds' "$scenario" "$result" "$seconds")
  summary+=("$line")
  echo "$line"
done

echo "---- molecule summary ----"
printf '%s\n' "${summary[@]}"
printf 'molecule total %ds for %d scenario(s)\n' "$(($(date +%s) - total_start))" "${#scenarios[@]}"
if ((${#failed[@]})); then
  echo "failed: ${failed[*]}"
  exit 1
fi
