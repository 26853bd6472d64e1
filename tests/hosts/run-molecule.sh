#!/usr/bin/env bash
# Run molecule scenarios on systemd guests, side by side, and print one timing line per scenario.
#
# Usage: tests/hosts/run-molecule.sh [--prepare] [scenario ...]
#   no scenario: every directory under molecule/ that holds a molecule.yml, in name order (default, alternative).
#   --prepare: run tests/hosts/setup.sh first (apt packages, guest images, venv, wheelhouse, ssh).
# Environment: MOLECULE_COMMAND (default "test"), e.g. MOLECULE_COMMAND=converge to keep the guests for debugging.
# Exit status: 0 when every scenario passed, 1 otherwise; the summary names the ones that failed.
#
# Guests of a scenario that an earlier, killed run left behind (containers named pai-<scenario>-*, the network
# pai-<scenario>) are removed before the scenario starts.
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

remove_leftovers() {
  local scenario=$1 names
  mapfile -t names < <(podman ps -a --filter label=owner=molecule --filter "name=^pai-$scenario-" --format '{{.Names}}')
  if ((${#names[@]})); then
    echo "run-molecule.sh: removing guests left by an earlier run: ${names[*]}"
    podman rm -f -t 0 "${names[@]}" >/dev/null
  fi
  if podman network exists "pai-$scenario"; then
    echo "run-molecule.sh: removing the network pai-$scenario left by an earlier run"
    podman network rm -f "pai-$scenario" >/dev/null
  fi
}

# One scenario, output to its log: prints its timing line into $WORK/molecule-<scenario>.result. Run in a
# background subshell, bash's `times` there reports that subshell's finished children: this scenario's molecule.
run_scenario() {
  local scenario=$1 log=$2 start rc seconds cpu result
  [[ $COMMAND != test ]] || remove_leftovers "$scenario"
  start=$(date +%s)
  molecule --base-config molecule/base.yml "$COMMAND" -s "$scenario" > "$log" 2>&1
  rc=$?
  seconds=$(($(date +%s) - start))
  times > "$WORK/molecule-$scenario.times" # here, not in a command substitution: that would report its own children
  cpu=$(tail -1 "$WORK/molecule-$scenario.times" | awk '{split($1, u, /[ms]/); split($2, s, /[ms]/); printf "%.0f", u[1]*60 + u[2] + s[1]*60 + s[2]}')
  if ((rc == 0)); then result=passed; else result=FAILED; fi
  printf 'molecule %-12s %-6s %4ds wall %4ds CPU  load %s\n' "$scenario" "$result" "$seconds" "$cpu" \
    "$(cut -d' ' -f1-3 /proc/loadavg)" > "$WORK/molecule-$scenario.result"
  return "$rc"
}

# The scenarios run at the same time, each on its own guests and podman network: a scenario mostly waits (on
# guests booting, apt, services starting, alert windows), so two together take little longer than the longer one.
# Each one's output is printed whole when it ends, in the order they end.
failed=()
summary=()
declare -A pid_of
total_start=$(date +%s)
for scenario in "${scenarios[@]}"; do
  if [[ ! -f molecule/$scenario/molecule.yml ]]; then
    echo "run-molecule.sh: no scenario molecule/$scenario" >&2
    failed+=("$scenario")
    continue
  fi
  log=$WORK/molecule-$scenario.log
  rm -f "$WORK/molecule-$scenario.result"
  run_scenario "$scenario" "$log" &
  pid_of[$scenario]=$!
  echo "molecule $scenario started (pid ${pid_of[$scenario]}, output in $log when it ends)"
done

while ((${#pid_of[@]})); do
  wait -n -p done_pid "${pid_of[@]}"
  rc=$?
  for scenario in "${!pid_of[@]}"; do
    [[ ${pid_of[$scenario]} == "$done_pid" ]] || continue
    unset "pid_of[$scenario]"
    echo "==== molecule $scenario: output ===="
    cat "$WORK/molecule-$scenario.log"
    line=$(cat "$WORK/molecule-$scenario.result" 2>/dev/null || echo "molecule $scenario FAILED (no result)")
    ((rc == 0)) || failed+=("$scenario")
    summary+=("$line")
    echo "$line"
  done
done

echo "---- molecule summary ----"
printf '%s\n' "${summary[@]}"
printf 'molecule total %ds for %d scenario(s), run at the same time\n' "$(($(date +%s) - total_start))" \
  "${#scenarios[@]}"
if ((${#failed[@]})); then
  echo "failed: ${failed[*]}"
  exit 1
fi
