#!/bin/sh
# Installs what the Docker engine's tests need: Debian's Docker daemon and a
# static busybox (the tests build their image from it; no registry is
# reachable). Idempotent: does nothing when both are there. The daemon is NOT
# started here: the tests start a private one and stop it (tests/docker_daemon.py).
set -eu
need=""
command -v dockerd >/dev/null 2>&1 || need="$need docker.io"
[ -x /bin/busybox ] && /bin/busybox --list >/dev/null 2>&1 && ldd /bin/busybox 2>&1 | grep -q "not a dynamic" \
    || need="$need busybox-static"
[ -z "$need" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "setup_docker: need$need but not root; install them with: sudo apt-get install -y$need" >&2
    exit 0  # the Docker tests skip, saying why
fi
export DEBIAN_FRONTEND=noninteractive
lock="-o DPkg::Lock::Timeout=600"
# Update the package lists once, only if the install cannot find the packages.
apt-get $lock install -y --no-install-recommends $need >/dev/null 2>&1 || {
    apt-get $lock update -qq
    apt-get $lock install -y --no-install-recommends $need
}
