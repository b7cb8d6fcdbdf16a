#!/bin/sh
# Install every Debian 12 package terse needs to build and test.
# Usage: scripts/install-deps.sh [extra packages...]   (as root, or with sudo available)
set -eu
PKGS="build-essential autoconf automake libtool pkg-config
      libcunit1-dev libhwloc-dev libibverbs-dev librdmacm-dev
      openmpi-bin libopenmpi-dev procps"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
missing=""
for p in $PKGS "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "install-deps: installing:$missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
else
    echo "install-deps: all packages present"
fi
