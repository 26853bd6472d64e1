#!/usr/bin/env bash
# Run make targets one after another and end with a table of what each took: wall time, CPU time of everything it
# ran (user + system, less sensitive to a busy machine than the wall time) and the load average when it ended.
#
# Usage: tools/stages.sh TARGET...    (e.g. tools/stages.sh hosts check integration molecule e2e)
# Stops at the first target that fails; the table then shows the stages that ran, the failed one marked. The table
# also goes to .cache/stages.md.
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPORT=$REPO/.cache/stages.md

# Sets CPU to the user + system CPU seconds of this shell's finished children so far (bash's `times`, run in this
# shell: inside a command substitution it would report the subshell's children, none).
TIMES=$(mktemp)
trap 'rm -f "$TIMES"' EXIT
children_cpu() {
  times > "$TIMES"
  CPU=$(tail -1 "$TIMES" | awk '{split($1, u, /[ms]/); split($2, s, /[ms]/); printf "%.1f", u[1]*60 + u[2] + s[1]*60 + s[2]}')
}

rows=()
status=0
total_start=$(date +%s)
children_cpu
total_cpu_start=$CPU
for target in "$@"; do
  start=$(date +%s)
  children_cpu
  cpu_start=$CPU
  make --no-print-directory -C "$REPO" "$target"
  rc=$?
  wall=$(($(date +%s) - start))
  children_cpu
  cpu=$(awk -v a="$CPU" -v b="$cpu_start" 'BEGIN {printf "%.0f", a - b}')
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  result=passed
  ((rc == 0)) || result=FAILED
  rows+=("$(printf '| %-12s | %-6s | %4dm%02ds | %6ss | %s |' "$target" "$result" $((wall / 60)) $((wall % 60)) \
    "$cpu" "$load")")
  if ((rc != 0)); then
    status=$rc
    break
  fi
done
wall=$(($(date +%s) - total_start))
children_cpu
cpu=$(awk -v a="$CPU" -v b="$total_cpu_start" 'BEGIN {printf "%.0f", a - b}')
{
  echo "| stage        | result | wall     | CPU     | load (1, 5, 15 min) at the end |"
  echo "|--------------|--------|----------|---------|--------------------------------|"
  printf '%s\n' "${rows[@]}"
  printf '| %-12s | %-6s | %4dm%02ds | %6ss | %s |\n' total "$( ((status == 0)) && echo passed || echo FAILED)" \
    $((wall / 60)) $((wall % 60)) "$cpu" "$(cut -d' ' -f1-3 /proc/loadavg)"
} > "$REPORT.tmp"
echo
echo "==== time per stage (also in ${REPORT#"$REPO"/}) ===="
cat "$REPORT.tmp"
mv "$REPORT.tmp" "$REPORT"
exit $status
