#!/bin/sh
# Try terse over real verbs on your own machine with soft-RoCE (rdma_rxe):
#
#   sudo sh scripts/softroce-laptop.sh [up|run|down|all] [--netdev IFACE]
#
#   up    load rdma_rxe, create an rxe device - on a dummy netdev (default:
#         nothing leaves the machine) or on IFACE - and check ulimit -l
#   run   terse_perf over verbs, 2 ranks, 4 KiB - 16 MiB, every value checked
#   down  remove what 'up' created (the rxe device, the dummy netdev)
#   all   up, run, down (the default)
#
# Where the kernel has no rdma_rxe (like the CI machines), it says so and
# falls back to the qemu guest that the test suite uses
# (tests/softroce/run.sh), which boots Debian's kernel with an rxe device.
# Needs: rdma-core, ibverbs-providers, iproute2, kmod (scripts/install-deps.sh
# --softroce installs them, and the guest's qemu and kernel too).
set -eu
cd "$(dirname "$0")/.."
action=all
netdev=""
while [ $# -gt 0 ]; do
    case "$1" in
    up | run | down | all) action=$1 ;;
    --netdev) netdev=${2:?--netdev needs an interface}; shift ;;
    *) echo "usage: $0 [up|run|down|all] [--netdev IFACE]"; exit 2 ;;
    esac
    shift
done
DUMMY=terse-rxe0
RXE=terse_rxe0
ADDR=10.99.7.1/24 # on the dummy netdev only; never routed anywhere
state=/tmp/terse-softroce-laptop.state

have_rxe() { modprobe -n rdma_rxe >/dev/null 2>&1 || [ -d /sys/module/rdma_rxe ]; }

up() {
    [ "$(id -u)" -eq 0 ] || { echo "softroce-laptop: 'up' needs root (sudo)"; exit 1; }
    command -v rdma >/dev/null 2>&1 || { echo "softroce-laptop: no 'rdma' tool: apt-get install iproute2 rdma-core"; exit 1; }
    if ! have_rxe; then
        echo "softroce-laptop: this kernel ($(uname -r)) has no rdma_rxe module."
        return 3
    fi
    modprobe rdma_rxe
    modprobe ib_uverbs 2>/dev/null || true
    modprobe rdma_ucm 2>/dev/null || true
    : >"$state"
    if [ -z "$netdev" ]; then
        modprobe dummy 2>/dev/null || true
        if ! ip link show "$DUMMY" >/dev/null 2>&1; then
            ip link add "$DUMMY" type dummy
            echo "dummy $DUMMY" >>"$state"
        fi
        ip addr replace "$ADDR" dev "$DUMMY"
        ip link set "$DUMMY" up
        netdev=$DUMMY
    fi
    if ! rdma link show "$RXE/1" >/dev/null 2>&1; then
        rdma link add "$RXE" type rxe netdev "$netdev"
        echo "rxe $RXE" >>"$state"
    fi
    echo "softroce-laptop: $RXE on $netdev:"
    rdma link show "$RXE/1" || true
    command -v ibv_devices >/dev/null 2>&1 && ibv_devices || true
    lim=$(ulimit -l)
    if [ "$lim" != unlimited ] && [ "$lim" -lt 262144 ]; then
        echo "softroce-laptop: ulimit -l is $lim KiB: terse registers its receive slots (8 MiB per peer) and"
        echo "  a 32 MiB bounce pool, so registration would fail with TERSE_ERR_MEMLOCK. Fix for this shell:"
        echo "    ulimit -l unlimited"
        echo "  and for good, in /etc/security/limits.conf:  *  -  memlock  unlimited"
    fi
}

run() {
    [ -x perf/terse_perf ] || sh scripts/build.sh
    [ "$(ulimit -l)" = unlimited ] || ulimit -l unlimited 2>/dev/null || true
    ip=$(echo "$ADDR" | cut -d/ -f1)
    [ -n "$netdev" ] && ip=""
    echo "softroce-laptop: terse_perf over verbs, 2 ranks"
    TERSE_TRANSPORT=verbs ${ip:+TERSE_IB_ADDR=$ip} ./perf/terse_perf -n 2 -b 4K -e 16M -c 1
}

down() {
    [ -f "$state" ] || { echo "softroce-laptop: nothing to remove"; return 0; }
    while read -r kind name; do
        case "$kind" in
        rxe) rdma link delete "$name" 2>/dev/null || true ;;
        dummy) ip link delete "$name" 2>/dev/null || true ;;
        esac
    done <"$state"
    rm -f "$state"
    echo "softroce-laptop: removed what 'up' created"
}

guest() {
    echo "softroce-laptop: running terse_perf over verbs in the qemu guest instead (tests/softroce/run.sh)"
    [ -x perf/terse_perf ] || sh scripts/build.sh
    sh tests/softroce/run.sh sh -c 'TERSE_TRANSPORT=verbs ./perf/terse_perf -n 2 -b 4K -e 16M -c 1'
}

case "$action" in
up) up || { [ $? -eq 3 ] && echo "softroce-laptop: try 'run' to use the qemu guest"; exit 1; } ;;
run) if [ -n "$(ls /sys/class/infiniband 2>/dev/null)" ]; then run; else guest; fi ;;
down) down ;;
all)
    if up; then
        trap down EXIT
        run
    else
        guest
    fi
    ;;
esac
