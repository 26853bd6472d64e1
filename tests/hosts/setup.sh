#!/usr/bin/env bash
# Prepare this machine to run the molecule scenarios and the sandbox on real systemd guests.
#
# Idempotent: every step checks whether its result is already there and skips itself; a second run takes seconds.
#   1. apt packages: podman, runc, debootstrap, the ssh client (plus gcc for the simulated NVML library);
#   2. /etc/containers/containers.conf (ulimits root may not raise here, runc because the host has hybrid cgroups);
#   3. the guest images localhost/bookworm-systemd:latest (Debian 12) and localhost/trixie-systemd:latest (Debian 13),
#      built with debootstrap and rebuilt only when their recipe changes. Each image also carries, in its apt cache,
#      the Debian packages the roles and the sandbox install (downloaded once, here, instead of once per guest);
#   4. the molecule virtualenv .cache/molecule-venv (ansible, molecule, testinfra, ansible-lint, yamllint);
#   5. the wheelhouse .cache/wheelhouse: our wheel and every dependency wheel for Python 3.11 (Debian 12) and 3.13
#      (Debian 13), so guests install offline;
#   6. the simulated NVML library .cache/nvml-sim/libnvidia-ml.so.1 when sim/nvml/ exists (the guest has no gcc);
#   7. the ssh key and client configuration .cache/ssh/ that Ansible and testinfra reach the guests with;
#   8. .cache/collections: this checkout as the collection pai.monitoring (a link), for ANSIBLE_COLLECTIONS_PATH.
#
# Usage: tests/hosts/setup.sh [--rebuild-image] [--skip-wheelhouse] [--venv-only]
#   --venv-only: only steps 4 and 8 (what `make check` needs for yamllint, ansible-lint and the local preflight
#   plays; no root, no apt).
# Environment: WORK (default <repo>/.cache).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WORK=${WORK:-$REPO/.cache}
VENV=$WORK/molecule-venv
WHEELHOUSE=$WORK/wheelhouse
SSH_DIR=$WORK/ssh
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
APT_PACKAGES=(debootstrap podman runc crun systemd-container uidmap slirp4netns gcc libc6-dev openssh-client)

# The guest images: one per supported Debian release (sandbox/sandbox.py and molecule/base.yml name them).
RELEASES=(bookworm trixie)
# What every guest has before Ansible runs: systemd, Python for Ansible, and sshd, which Ansible and testinfra start
# over `podman exec` (`sshd -i`, see write_ssh_config): one exec per run instead of three per task.
GUEST_BASE=systemd,systemd-sysv,dbus,python3,python3-apt,iproute2,procps,sudo,ca-certificates,openssh-server
# Debian packages the roles (prometheus, alertmanager, node_exporter, job_exporter, watchdog) and the sandbox
# (VictoriaMetrics, the stand-in's virtualenv) install. They are fetched into the image's apt cache when the image is
# built, so no guest downloads them again; apt in the guest still installs them, as on any host.
GUEST_CACHED_PACKAGES=(
  prometheus prometheus-alertmanager prometheus-node-exporter victoria-metrics python3-venv python3-packaging
)
# Python versions the wheelhouse serves: Debian 12's (this machine's) and Debian 13's.
WHEELHOUSE_PYTHONS="3.11 3.13"
# Bump when the recipe below changes in a way the variables above do not show: images are rebuilt on a new recipe.
IMAGE_RECIPE_VERSION=2

mkdir -p "$WORK"
log() { printf 'setup.sh: %s\n' "$*" >&2; }

image_name() { printf 'localhost/%s-systemd:latest' "$1"; }

image_recipe() {
  printf '%s\n' "$IMAGE_RECIPE_VERSION" "$1" "$GUEST_BASE" "${GUEST_CACHED_PACKAGES[*]}" | sha256sum | cut -c1-16
}

missing_apt_packages() {
  local pkg
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || printf '%s\n' "$pkg"
  done
}

images_to_build() {
  local release image
  for release in "${RELEASES[@]}"; do
    image=$(image_name "$release")
    if $REBUILD_IMAGE || ! podman image exists "$image" \
      || [[ $(podman image inspect --format '{{ index .Config.Labels "pai.recipe" }}' "$image" 2>/dev/null) \
        != "$(image_recipe "$release")" ]]; then
      printf '%s\n' "$release"
    fi
  done
}

containers_conf_wanted() {
  printf '%s\n' '# Written by pai-monitoring tests/hosts/setup.sh' '[containers]' \
    'default_ulimits = ["nofile=16384:16384", "nproc=16384:16384"]' '[engine]' 'runtime = "runc"'
}

# Say what will change on this machine (outside this repository) before changing it.
announce() {
  local changes=() missing builds
  mapfile -t missing < <(missing_apt_packages)
  ((${#missing[@]} == 0)) || changes+=("install the Debian packages ${missing[*]} (apt-get; remove with apt-get purge)")
  if [[ ! -f /etc/containers/containers.conf ]] \
    || [[ "$(cat /etc/containers/containers.conf)" != "$(containers_conf_wanted)" ]]; then
    changes+=("write /etc/containers/containers.conf (ulimits and runc for podman; the previous file is kept as \
containers.conf.pai-backup)")
  fi
  mapfile -t builds < <(images_to_build)
  local release
  for release in "${builds[@]}"; do
    changes+=("build the podman image $(image_name "$release") (remove with podman rmi)")
  done
  if ((${#changes[@]})); then
    log "this machine will change:"
    printf 'setup.sh:   - %s\n' "${changes[@]}" >&2
  fi
}

install_apt_packages() {
  local missing
  mapfile -t missing < <(missing_apt_packages)
  if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
}

configure_containers() {
  local conf=/etc/containers/containers.conf want
  want=$(containers_conf_wanted)
  mkdir -p /etc/containers
  if [[ ! -f $conf ]] || [[ "$(cat "$conf")" != "$want" ]]; then
    [[ ! -f $conf ]] || cp -p "$conf" "$conf.pai-backup"
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

# The host's Debian sources with the guest's release in place of the host's.
guest_sources() {
  local release=$1 host
  host=$(awk '/^Suites:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  sed -E "/^Suites:/ s/\b${host}\b/${release}/g" /etc/apt/sources.list.d/debian.sources
}

# Build one release's image into a temporary tag and move the real tag only when every step worked: an image whose
# build failed is never taken for a finished one. Runs as a background job (its own subshell): `set -e` stops it at
# the first failing step, and the EXIT trap cleans up on every way out.
build_image() {
  local release=$1 image mirror rootfs building
  image=$(image_name "$release")
  building="localhost/${release}-systemd:building-$BASHPID"
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  rootfs=$(mktemp -d "$WORK/rootfs-$release.XXXXXX")
  trap 'unmount_below "$rootfs"; rm -rf --one-file-system "$rootfs"; podman image rm "$building" >/dev/null 2>&1 || true' EXIT
  exec > "$WORK/debootstrap-$release.log" 2>&1
  debootstrap --variant=minbase --include="$GUEST_BASE" "$release" "$rootfs" "$mirror"
  # debootstrap can leave the target's /proc mounted (a submount such as binfmt_misc keeps it busy); the image
  # must not contain the host's /proc, and rm -rf must not walk into it.
  unmount_below "$rootfs"
  guest_sources "$release" > "$rootfs/etc/apt/sources.list.d/debian.sources"
  rm -f "$rootfs/etc/apt/sources.list" "$rootfs"/var/cache/apt/archives/*.deb
  cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
  chroot "$rootfs" update-ca-certificates
  # The package cache of every guest: the lists and the packages the roles install, fetched once, here.
  cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
  chroot "$rootfs" apt-get update -q
  chroot "$rootfs" apt-get install -y -q --no-install-recommends --download-only "${GUEST_CACHED_PACKAGES[@]}"
  # podman gives each guest its own resolv.conf.
  rm -f "$rootfs/etc/resolv.conf"
  # sshd runs only when a client starts it over `podman exec` (`sshd -i`): guests listen on no extra port.
  systemctl --root="$rootfs" disable ssh.service
  printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$rootfs/etc/hosts"
  : > "$rootfs/etc/machine-id"
  unmount_below "$rootfs"
  tar -C "$rootfs" --one-file-system -c . | podman import --change 'CMD ["/sbin/init"]' \
    --change 'STOPSIGNAL SIGRTMIN+3' --change "LABEL pai.recipe=$(image_recipe "$release")" - "$building"
  podman tag "$building" "$image"
}

# Both images build at once: debootstrap waits on the network about as much as on the CPU.
build_images() {
  local builds release pids=() failed=0 i
  mapfile -t builds < <(images_to_build)
  ((${#builds[@]})) || return 0
  for release in "${builds[@]}"; do
    log "building $(image_name "$release") with debootstrap (about a minute)"
    build_image "$release" &
    pids+=($!)
  done
  for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
      tail -20 "$WORK/debootstrap-${builds[$i]}.log" >&2
      log "building $(image_name "${builds[$i]}") failed; see $WORK/debootstrap-${builds[$i]}.log"
      failed=1
    fi
  done
  return $failed
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
  # The digest covers the sources and this recipe (WHEELHOUSE_PYTHONS): a change of either rebuilds.
  local digest
  digest=$( (cd "$REPO" && find pyproject.toml collectors -name __pycache__ -prune -o -type f -print0 | sort -z \
    | xargs -0 sha256sum; echo "$WHEELHOUSE_PYTHONS") | sha256sum | cut -d' ' -f1)
  if [[ -f $WHEELHOUSE/.source-digest ]] && [[ $(cat "$WHEELHOUSE/.source-digest") == "$digest" ]] \
    && compgen -G "$WHEELHOUSE/pai_monitoring-*.whl" >/dev/null; then
    return
  fi
  log "building the wheelhouse $WHEELHOUSE"
  mkdir -p "$WHEELHOUSE"
  # Our own wheel changes with every edit: drop the old one so the guest never installs a stale build.
  rm -f "$WHEELHOUSE"/pai_monitoring-*.whl "$WHEELHOUSE/.source-digest"
  # Build from a copy: setuptools writes build/ next to the sources, which must stay out of the working tree.
  local src
  src=$(mktemp -d "$WORK/wheel-src.XXXXXX")
  trap 'rm -rf "$src"' RETURN
  cp "$REPO/pyproject.toml" "$src/"
  [[ ! -f $REPO/README.md ]] || cp "$REPO/README.md" "$src/"
  cp -r "$REPO/collectors" "$src/"
  find "$src" -name __pycache__ -prune -exec rm -rf {} +
  # Debian 13 guests run Python 3.13: the same dependencies as binary wheels for it (pure wheels are shared).
  { "$VENV/bin/pip" wheel -q --disable-pip-version-check -w "$WHEELHOUSE" "$src[gpu,watchdog]" \
    && "$VENV/bin/pip" download -q --disable-pip-version-check --only-binary=:all: -d "$WHEELHOUSE" \
      --python-version 3.13 --implementation cp --abi cp313 --abi abi3 --abi none \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      "$(echo "$WHEELHOUSE"/pai_monitoring-*.whl)[gpu,watchdog]"; } 2>"$WORK/wheelhouse.log" || { tail -20 "$WORK/wheelhouse.log" >&2; return 1; }
  printf '%s\n' "$digest" > "$WHEELHOUSE/.source-digest"
}

build_nvml_sim() {
  local src=$REPO/sim/nvml out=$WORK/nvml-sim built
  if [[ ! -f $src/build.py ]]; then
    log "sim/nvml/build.py not present: simulated NVML library skipped"
    return
  fi
  # Built here (the guests have no compiler) against Debian 12's glibc, which Debian 13's also runs.
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

# Ansible and testinfra reach a guest over ssh, with the guest's sshd started per connection by `podman exec -i
# <guest> sshd -i` (inetd mode: no network, no listening daemon) and accepting only this key. With ssh's connection
# sharing and Ansible's pipelining a task costs one round trip instead of three `podman exec` calls.
write_ssh_config() {
  local key=$SSH_DIR/id_ed25519 want
  mkdir -p -m 0700 "$SSH_DIR"
  [[ -f $key ]] || ssh-keygen -q -t ed25519 -N '' -C pai-monitoring-tests -f "$key"
  want=$(cat <<CONFIG
# Written by tests/hosts/setup.sh: how Ansible and testinfra reach the systemd guests (podman containers by name).
Host *
  User root
  IdentityFile $key
  IdentitiesOnly yes
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  LogLevel ERROR
  # A connection starts with podman exec, which waits for the lock of podman while other podman commands run.
  ConnectTimeout 120
  ProxyCommand podman exec -i %h /bin/sh -c 'mkdir -p -m 0755 /run/sshd && exec /usr/sbin/sshd -i -o AuthorizedKeysFile=none -o "AuthorizedKeysCommand=/usr/bin/echo $(cat "$key.pub")" -o AuthorizedKeysCommandUser=nobody'
CONFIG
)
  [[ -f $SSH_DIR/config && "$(cat "$SSH_DIR/config")" == "$want" ]] || printf '%s\n' "$want" > "$SSH_DIR/config"
}

if $VENV_ONLY; then
  create_venv
  link_checkout_collection
  log "ready: venv $VENV"
  exit 0
fi
announce
install_apt_packages
configure_containers
# The images build in the background while the rest is made: they wait on the network and on dpkg, the rest on pip.
build_images &
images=$!
create_venv
build_wheelhouse
build_nvml_sim
link_checkout_collection
write_ssh_config
wait "$images"
log "ready: images $(for r in "${RELEASES[@]}"; do printf '%s ' "$(image_name "$r")"; done)venv $VENV, wheelhouse \
$WHEELHOUSE, ssh $SSH_DIR"
