#!/bin/sh
# Install the Debian 12 packages terse needs.
#   scripts/install-deps.sh              build, test and benchmark dependencies
#   scripts/install-deps.sh --softroce   also the soft-RoCE VM (qemu, Debian's kernel, rdma-core tools)
#   scripts/install-deps.sh PKG...       also these packages
# Runs as root, or through sudo.
set -eu
PKGS="build-essential autoconf automake libtool pkg-config
      libcunit1-dev libhwloc-dev libibverbs-dev librdmacm-dev
      openmpi-bin libopenmpi-dev mpich libmpich-dev gfortran hpcc scalapack-mpi-test
      procps zlib1g-dev dataset-fashion-mnist
      python3 python3-numpy python3-torch python3-torchvision python3-matplotlib"
SOFTROCE="qemu-system-x86 linux-image-amd64 busybox-static kmod iproute2 rdma-core
          ibverbs-providers ibverbs-utils perftest rdmacm-utils"
extra=""
for a in "$@"; do
    case "$a" in
    --softroce) extra="$extra $SOFTROCE" ;;
    *) extra="$extra $a" ;;
    esac
done
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
missing=""
for p in $PKGS $extra; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "install-deps: installing:$missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
else
    echo "install-deps: all packages present"
fi
