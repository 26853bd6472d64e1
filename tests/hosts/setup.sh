#!/usr/bin/env bash
# Prepare this machine to run the molecule scenarios on real systemd guests.
#
# Idempotent: every step checks whether its result is already there and skips itself; a second run takes seconds.
#   1. apt packages: podman, runc, debootstrap (plus gcc for the simulated NVML library);
#   2. /etc/containers/containers.conf (ulimits root may not raise here, runc because the host has hybrid cgroups);
#   3. the guest image localhost/bookworm-systemd:latest (debootstrap + podman import), reused when present;
#   4. the molecule virtualenv .cache/molecule-venv (ansible, molecule, testinfra, ansible-lint, yamllint);
#   5. the wheelhouse .cache/wheelhouse: our wheel and every dependency wheel, so guests install offline;
#   6. the simulated NVML library .cache/nvml-sim/libnvidia-ml.so.1 when sim/nvml/ exists (the guest has no gcc);
#   7. .cache/collections: this checkout as the collection pai.monitoring (a link), for ANSIBLE_COLLECTIONS_PATH.
#
# Usage: tests/hosts/setup.sh [--rebuild-image] [--skip-wheelhouse] [--venv-only]
#   --venv-only: only steps 4 and 7 (what `make check` needs for yamllint and ansible-lint; no root, no apt).
# Environment: WORK (default <repo>/.cache), IMAGE (default localhost/bookworm-systemd:latest).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WORK=${WORK:-$REPO/.cache}
IMAGE=${IMAGE:-localhost/bookworm-systemd:latest}
VENV=$WORK/molecule-venv
WHEELHOUSE=$WORK/wheelhouse
REBUILD_IMAGE=false
SKIP_WHEELHOUSE=false
VENV_ONLY=false
for arg in "$@"; do
  case $arg in
    --rebuild-image) REBUILD_IMAGE=true ;;
    --skip-wheelhouse) SKIP_WHEELHOUSE=true ;;
    --venv-only) VENV_ONLY=true ;;
    *) echo "setup.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

# Versions that were tested together (../shared/TESTING.md); ansible-lint and yamllint chosen to match ansible-core.
PIP_PINS=(
  ansible==12.3.0 ansible-core==2.19.14 molecule==26.10.0 'molecule-plugins[podman]==26.10.12'
  pytest==9.2.0 pytest-testinfra==10.2.2 ansible-lint==25.9.2 yamllint==1.37.1
  bcrypt==5.0.0 passlib==1.7.4
)
APT_PACKAGES=(debootstrap podman runc crun systemd-container uidmap slirp4netns gcc libc6-dev)

mkdir -p "$WORK"
log() { printf 'setup.sh: %s\n' "$*" >&2; }

install_apt_packages() {
  local missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
}

configure_containers() {
  local conf=/etc/containers/containers.conf want
  want=$'# Written by pai-monitoring tests/hosts/setup.sh\n[containers]\ndefault_ulimits = ["nofile=16384:16384", "nproc=16384:16384"]\n[engine]\nruntime = "runc"'
  mkdir -p /etc/containers
  if [[ ! -f $conf ]] || [[ "$(cat "$conf")" != "$want" ]]; then
    log "writing $conf"
    printf '%s\n' "$want" > "$conf"
  fi
}

# Lazily unmount every mount point below a directory, deepest first.
unmount_below() {
  local dir mounts
  dir=$(realpath "$1")
  mapfile -t mounts < <(awk -v d="$dir/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r)
  ((${#mounts[@]} == 0)) || umount -l "${mounts[@]}"
}

build_image() {
  if $REBUILD_IMAGE && podman image exists "$IMAGE"; then
    podman image rm -f "$IMAGE" >/dev/null
  fi
  if podman image exists "$IMAGE"; then
    return
  fi
  log "building $IMAGE with debootstrap (about a minute)"
  local mirror rootfs
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  rootfs=$(mktemp -d "$WORK/rootfs.XXXXXX")
  trap 'unmount_below "$rootfs"; rm -rf --one-file-system "$rootfs"' RETURN
  debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,dbus,python3,python3-apt,iproute2,procps,sudo,ca-certificates \
    bookworm "$rootfs" "$mirror" > "$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log" >&2; return 1; }
  # debootstrap can leave the target's /proc mounted (a submount such as binfmt_misc keeps it busy); the image
  # must not contain the host's /proc, and rm -rf must not walk into it.
  unmount_below "$rootfs"
  cp /etc/apt/sources.list.d/debian.sources "$rootfs/etc/apt/sources.list.d/"
  rm -f "$rootfs/etc/apt/sources.list" "$rootfs"/var/cache/apt/archives/*.deb
  cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
  chroot "$rootfs" update-ca-certificates >/dev/null
  printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$rootfs/etc/hosts"
  : > "$rootfs/etc/machine-id"
  tar -C "$rootfs" --one-file-system -c . | podman import --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' - "$IMAGE" >/dev/null
}

create_venv() {
  local stamp=$VENV/.pins want
  want=$(printf '%s\n' "${PIP_PINS[@]}")
  if [[ -f $stamp ]] && [[ "$(cat "$stamp")" == "$want" ]] && [[ -x $VENV/bin/molecule ]]; then
    return
  fi
  log "creating $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q "${PIP_PINS[@]}"
  printf '%s\n' "$want" > "$stamp"
}

build_wheelhouse() {
  if $SKIP_WHEELHOUSE; then
    return
  fi
  if [[ ! -f $REPO/pyproject.toml ]]; then
    log "no pyproject.toml yet: wheelhouse skipped"
    return
  fi
  # Rebuild only when the sources changed: scenarios running elsewhere keep their wheels.
  local digest
  digest=$(cd "$REPO" && find pyproject.toml collectors -name __pycache__ -prune -o -type f -print0 | sort -z \
    | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
  if [[ -f $WHEELHOUSE/.source-digest ]] && [[ $(cat "$WHEELHOUSE/.source-digest") == "$digest" ]] \
    && compgen -G "$WHEELHOUSE/pai_monitoring-*.whl" >/dev/null; then
    return
  fi
  log "building the wheelhouse $WHEELHOUSE"
  mkdir -p "$WHEELHOUSE"
  # Our own wheel changes with every edit: drop the old one so the guest never installs a stale build.
  rm -f "$WHEELHOUSE"/pai_monitoring-*.whl
  # Build from a copy: setuptools writes build/ next to the sources, which must stay out of the working tree.
  local src
  src=$(mktemp -d "$WORK/wheel-src.XXXXXX")
  trap 'rm -rf "$src"' RETURN
  cp "$REPO/pyproject.toml" "$src/"
  [[ ! -f $REPO/README.md ]] || cp "$REPO/README.md" "$src/"
  cp -r "$REPO/collectors" "$src/"
  find "$src" -name __pycache__ -prune -exec rm -rf {} +
  "$VENV/bin/pip" wheel -q --disable-pip-version-check -w "$WHEELHOUSE" "$src[gpu,watchdog]" 2>"$WORK/wheelhouse.log" \
    || { tail -20 "$WORK/wheelhouse.log" >&2; return 1; }
  printf '%s\n' "$digest" > "$WHEELHOUSE/.source-digest"
}

build_nvml_sim() {
  local src=$REPO/sim/nvml out=$WORK/nvml-sim built
  if [[ ! -f $src/build.py ]]; then
    log "sim/nvml/build.py not present: simulated NVML library skipped"
    return
  fi
  # Built here (the guests have no compiler); host and guests are both bookworm, so the glibc matches.
  built=$(python3 "$src/build.py" | tail -1)
  mkdir -p "$out"
  install -m 0644 "$built/libnvidia-ml.so.1" "$out/libnvidia-ml.so.1"
}

# The roles name the collection's filters by their full names (pai.monitoring.NAME): a run of the roles from this
# checkout puts .cache/collections on ANSIBLE_COLLECTIONS_PATH, where this link makes the checkout that collection.
link_checkout_collection() {
  local parent=$WORK/collections/ansible_collections/pai
  mkdir -p "$parent"
  [[ -L $parent/monitoring ]] || ln -s ../../../.. "$parent/monitoring"
}

if $VENV_ONLY; then
  create_venv
  link_checkout_collection
  log "ready: venv $VENV"
  exit 0
fi
install_apt_packages
configure_containers
build_image
create_venv
build_wheelhouse
build_nvml_sim
link_checkout_collection
log "ready: image $IMAGE, venv $VENV, wheelhouse $WHEELHOUSE"
