#!/bin/sh
# Runs as PID 1 inside the soft-RoCE guest, on the host's root file system:
# brings up rdma_rxe on a dummy netdev, runs $out/cmd, stores its exit status
# in $out/status and powers off. Never returns.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
out=$(sed -n 's/.*terse_out=\([^ ]*\).*/\1/p' /proc/cmdline)
finish() {
    echo "$1" > "$out/status"
    sync
    echo o > /proc/sysrq-trigger
    sleep 30
}
trap 'finish 99' EXIT
mkdir -p /dev/shm /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /dev/shm
mount -t devpts devpts /dev/pts
# FIFOs and sockets do not work over 9p (Open MPI needs them in its session
# directory): temporary files go to a tmpfs. /tmp itself stays the host's,
# since the build tree may live there. Open MPI also rejects the kernel's
# default host name "(none)".
mkdir -p /run/tmp
export TMPDIR=/run/tmp
hostname terse-guest
ip link set lo up
{
    modprobe rdma_rxe && modprobe ib_uverbs && modprobe rdma_ucm && modprobe dummy &&
    ip link add d0 type dummy && ip addr add 10.99.0.1/24 dev d0 && ip link set d0 up &&
    rdma link add rxe0 type rxe netdev d0
} > "$out/setup.log" 2>&1 || finish 90
ulimit -l unlimited
ibv_devinfo -v > "$out/ibv_devinfo.txt" 2>&1
cd "$(cat "$out/dir")" || finish 91
sh "$out/cmd" > "$out/log" 2>&1
rc=$?
trap - EXIT
finish $rc
