#!/usr/bin/env bash
# Build the wheelhouse the job_exporter and watchdog roles install from (job_exporter_wheelhouse_dir,
# watchdog_wheelhouse_dir): the pai_monitoring wheel and every wheel its daemons need, for the HOSTS' Python and
# platform, not this machine's. Our wheel is pure Python (one file for every target); the dependencies come as binary
# wheels chosen for each target Python (--only-binary, so nothing is compiled on the hosts and no wheel of this
# machine's Python slips in). The hosts then install offline (pip --no-index).
#
# Usage: tools/wheelhouse.sh [-o DIR] [-p X.Y]... [-a ARCH]
#   -o DIR   where the wheels go (default dist/wheelhouse); old pai_monitoring wheels there are replaced
#   -p X.Y   a target CPython version, repeatable (default: 3.11 and 3.13, Debian 12's and Debian 13's python3)
#   -a ARCH  the targets' machine (default x86_64; aarch64 for ARM hosts)
# Environment: PYTHON, the Python whose pip builds and downloads (default python3; it needs pip and network access to
# the package index, the hosts do not).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$REPO/dist/wheelhouse
ARCH=x86_64
PYTHONS=()
while getopts "o:p:a:" opt; do
  case $opt in
    o) OUT=$OPTARG ;;
    p) PYTHONS+=("$OPTARG") ;;
    a) ARCH=$OPTARG ;;
    *) echo "usage: $0 [-o DIR] [-p X.Y]... [-a ARCH]" >&2; exit 2 ;;
  esac
done
((${#PYTHONS[@]})) || PYTHONS=(3.11 3.13)
PIP=("${PYTHON:-python3}" -m pip --disable-pip-version-check)
# Debian 12 has glibc 2.36 and Debian 13 2.41: manylinux wheels up to 2_34 run on both.
PLATFORMS=(manylinux_2_34 manylinux_2_28 manylinux_2_17 manylinux2014)
log() { printf 'wheelhouse: %s\n' "$*" >&2; }

mkdir -p "$OUT"
rm -f "$OUT"/pai_monitoring-*.whl
# Build from a copy: setuptools writes build/ next to the sources, which must stay out of the working tree.
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
cp "$REPO/pyproject.toml" "$REPO/README.md" "$src/"
cp -r "$REPO/collectors" "$src/"
find "$src" -name __pycache__ -prune -exec rm -rf {} +
find "$src" -name '*.egg-info' -prune -exec rm -rf {} +
log "building the pai_monitoring wheel into $OUT"
"${PIP[@]}" wheel -q --no-deps -w "$OUT" "$src"
wheel=$(ls "$OUT"/pai_monitoring-*.whl)

for version in "${PYTHONS[@]}"; do
  abi=cp${version/./}
  platform_args=()
  for platform in "${PLATFORMS[@]}"; do platform_args+=(--platform "${platform}_$ARCH"); done
  log "downloading the dependencies for CPython $version on $ARCH"
  "${PIP[@]}" download -q --only-binary=:all: -d "$OUT" --python-version "$version" --implementation cp \
    --abi "$abi" --abi abi3 --abi none "${platform_args[@]}" "$wheel[gpu,watchdog]"
done
log "ready: $(find "$OUT" -name '*.whl' | wc -l) wheels in $OUT for CPython ${PYTHONS[*]} on $ARCH"
