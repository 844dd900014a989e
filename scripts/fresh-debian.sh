#!/usr/bin/env bash
# The README's test command on a freshly made Debian 12: proves that scripts/test.sh installs everything
# the tests need on a machine that has only Rust (and the C compiler Rust links with). Not run by CI: it
# needs root (debootstrap, chroot, mounts) and takes long (a build from nothing, every test).
#
#   usage: scripts/fresh-debian.sh [--again] [ROOT]   ROOT defaults to /work/deb12; made anew each run
#   --again: after a fix, keep ROOT as the last run left it (its packages, its build in /build), pull
#            the new commits into its clone and run scripts/test.sh there again. Quicker (no build
#            from nothing), but not a fresh check: the packages the last run installed are there.
#
# What the chroot gets, and nothing else:
#   - `debootstrap --variant=minbase bookworm` (the size of a `debian:12` container image: no procps,
#     no Python, no CA certificates);
#   - gcc + libc6-dev (rustc links through cc), git (to clone), ca-certificates with this machine's extra
#     CAs from /usr/local/share/ca-certificates (the registries are reached through a TLS-inspecting
#     proxy here), and this machine's registry settings (apt.conf.d, /etc/pip.conf, the PIP_* variables);
#   - the Rust toolchain: ~/.rustup bind-mounted read-only, ~/.cargo/bin copied (an empty registry, so
#     cargo downloads every crate as on a new machine).
# Then, inside: a `git clone` of this worktree's committed HEAD and `scripts/test.sh`, all at nice 19.
# The base system (debootstrap + the packages above) is cached in ROOT.base and copied for each run, so
# that packages test.sh installed in an earlier run never hide a missing install.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
again=false
if [ "${1:-}" = --again ]; then
  again=true
  shift
fi
root=${1:-/work/deb12}
base="$root.base"
# This machine's Debian mirror (the deb822 sources file), overridable.
mirror=${DEBIAN_MIRROR:-$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null |
  grep -v security | head -n1)}
mirror=${mirror:-http://deb.debian.org/debian}
rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
cargo_home=${CARGO_HOME:-$HOME/.cargo}

[ "$(id -u)" -eq 0 ] || { echo "fresh-debian.sh: needs root (debootstrap, chroot, mount)" >&2; exit 2; }
command -v debootstrap >/dev/null || { echo "fresh-debian.sh: apt-get install debootstrap" >&2; exit 2; }

mounted=()
mount_in() { # mount_in ROOT ARGS... TARGET: mount, remembering the target for the cleanup
  local r=$1
  shift
  local target="${*: -1}"
  mkdir -p "$target"
  mount "$@"
  mounted+=("$target")
}
cleanup() {
  local i
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
    umount -l "${mounted[$i]}" 2>/dev/null || true
  done
  mounted=()
}
trap cleanup EXIT

mount_system() { # the kernel file systems Chromium, Python and the tests need
  local r=$1
  mount_in "$r" -t proc proc "$r/proc"
  mount_in "$r" -t sysfs sys "$r/sys"
  mount_in "$r" --bind /dev "$r/dev"
  mount_in "$r" --bind /dev/pts "$r/dev/pts"
  # Chromium's shared memory; a tmpfs of the chroot's own, not the host's /dev/shm.
  mount_in "$r" -t tmpfs -o mode=1777,size=1g shm "$r/dev/shm"
  cp /etc/resolv.conf "$r/etc/resolv.conf"
}

in_chroot() { # in_chroot ROOT COMMAND: a login-less root shell with a clean environment
  local r=$1
  shift
  local pip_env=()
  local var
  for var in $(compgen -e | grep '^PIP_' || true); do
    # A local wheel folder of this machine is not in the chroot (pip warns on every call without it).
    [ "$var" = PIP_FIND_LINKS ] && [ ! -e "$r${!var}" ] && continue
    pip_env+=("$var=${!var}")
  done
  nice -n 19 chroot "$r" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
    PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    RUSTUP_HOME=/root/.rustup CARGO_HOME=/root/.cargo DEBIAN_FRONTEND=noninteractive \
    "${pip_env[@]}" /bin/bash -c "$*"
}

if [ ! -e "$base/.complete" ]; then
  echo "== debootstrap bookworm from $mirror into $base"
  rm -rf "$base"
  nice -n 19 debootstrap --variant=minbase bookworm "$base" "$mirror"
  # The registries as this machine reaches them: apt's settings, pip's, and the extra CAs.
  cp -a /etc/apt/apt.conf.d/. "$base/etc/apt/apt.conf.d/"
  [ -f /etc/pip.conf ] && cp /etc/pip.conf "$base/etc/pip.conf"
  mkdir -p "$base/usr/local/share/ca-certificates"
  cp -a /usr/local/share/ca-certificates/. "$base/usr/local/share/ca-certificates/"
  mount_system "$base"
  in_chroot "$base" 'apt-get update -qq && apt-get install -y -qq --no-install-recommends \
    gcc libc6-dev git ca-certificates >/dev/null && update-ca-certificates'
  cleanup
  touch "$base/.complete"
fi

if $again; then
  [ -d "$root/build/tollgate" ] || { echo "fresh-debian.sh: no earlier run in $root" >&2; exit 2; }
  echo "== again in $root (not fresh: what the last run installed is still there)"
else
  echo "== a copy of the base system in $root"
  rm -rf "$root"
  cp -a "$base" "$root"
fi
mount_system "$root"
mkdir -p "$root/root/.cargo"
cp -a "$cargo_home/bin" "$root/root/.cargo/"
mount_in "$root" --bind -o ro "$rustup_home" "$root/root/.rustup"
# The worktree, read-only, at its own path; a worktree's .git points into the main repository's, so
# that is mounted at its own path too.
mount_in "$root" --bind -o ro "$repo" "$root$repo"
common_git=$(git -C "$repo" rev-parse --path-format=absolute --git-common-dir)
if [ "$common_git" != "$repo/.git" ]; then
  mount_in "$root" --bind -o ro "$common_git" "$root$common_git"
fi

start=$(date +%s)
status=0
if $again; then
  echo "== in the chroot: git pull in /build/tollgate, then scripts/test.sh"
  fetch="cd /build/tollgate && git pull -q --ff-only"
else
  echo "== in the chroot: git clone $repo, then scripts/test.sh"
  fetch="rm -rf /build && git clone -q '$repo' /build/tollgate && cd /build/tollgate"
fi
in_chroot "$root" "git config --global --add safe.directory '*' && $fetch && \
  git log --oneline -1 && ./scripts/test.sh" || status=$?
echo "== scripts/test.sh exited $status after $(($(date +%s) - start)) s"
exit "$status"
