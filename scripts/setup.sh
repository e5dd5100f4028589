#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine (or re-checks a set-up one) for lcow: system tools the tests use as
# independent witnesses, pnpm, dependencies, and a build. Idempotent; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for pair in qemu-img:qemu-utils qemu-io:qemu-utils mkfs.ext4:e2fsprogs e2fsck:e2fsprogs debugfs:e2fsprogs dumpe2fs:e2fsprogs \
  getfattr:attr veritysetup:cryptsetup-bin losetup:mount tar:tar cc:gcc dockerd:docker.io findmnt:mount setpriv:util-linux \
  skopeo:skopeo docker-registry:docker-registry htpasswd:apache2-utils openssl:openssl zstd:zstd strace:strace \
  containerd:containerd ctr:containerd go:golang-go systemd-analyze:systemd \
  groff:groff-base man:man-db zsh:zsh; do
  tool=${pair%%:*} pkg=${pair#*:}
  PATH="$PATH:/usr/sbin:/sbin" command -v "$tool" >/dev/null 2>&1 || need_apt+=("$pkg")
done
# containerd's sources: its .proto files (the snapshotter's definitions are checked against them) and its
# snapshotter conformance suite, built with Debian's Go against Debian's packaged dependencies.
[ -e /usr/share/gocode/src/github.com/containerd/containerd/snapshots/testsuite/testsuite.go ] \
  || need_apt+=(golang-github-containerd-containerd-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  pkgs=$(printf '%s\n' "${need_apt[@]}" | sort -u | tr '\n' ' ')
  echo "setup: installing apt packages: $pkgs"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  # docker.io and docker-registry are installed for tests that start their own private daemons: the
  # packages' own services must not start (policy-rc.d says no while apt runs, unless the machine already has one).
  own_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null && $SUDO chmod +x /usr/sbin/policy-rc.d
    own_policy=1
  fi
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -q --no-install-recommends $pkgs >/dev/null 2>&1 \
    || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q --no-install-recommends $pkgs >/dev/null; }
  if [ -n "$own_policy" ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
fi

if ! command -v pnpm >/dev/null 2>&1 || [ "$(pnpm --version | cut -d. -f1)" != "10" ]; then
  echo "setup: installing pnpm 10"
  npm install -g pnpm@10 >/dev/null 2>&1
fi

pnpm install --frozen-lockfile --reporter=append-only 2>&1 | grep -v '^Progress' | tail -3
pnpm run build >/dev/null
echo "setup: ready ($(node --version), pnpm $(pnpm --version), $(qemu-img --version | head -1))"
