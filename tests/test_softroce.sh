#!/bin/sh
# make check entry: the multi-rank suites over real verbs on soft-RoCE
# (natively when the kernel has RDMA, else inside the qemu guest).
# Without a way to run verbs this is a loud SKIP - and a FAIL under CI=true,
# where scripts/test-all.sh has installed everything it needs.
here=$(cd "$(dirname "$0")" && pwd)
srcdir=$(cd "$here/.." && pwd)
have_vm=1
command -v qemu-system-x86_64 >/dev/null 2>&1 || have_vm=0
ls /lib/modules/*/kernel/drivers/infiniband/sw/rxe/rdma_rxe.ko >/dev/null 2>&1 || have_vm=0
[ -x /bin/busybox ] || have_vm=0
native=0
[ -n "$(ls /sys/class/infiniband 2>/dev/null)" ] && native=1
if [ "$native" = 0 ] && [ "$have_vm" = 0 ]; then
    msg="soft-RoCE suite cannot run: no RDMA device and no qemu/kernel/busybox (scripts/install-deps.sh --softroce)"
    if [ "${CI:-}" = true ]; then
        echo "FAIL: $msg"
        exit 1
    fi
    echo "SKIP: $msg"
    exit 77
fi
# (the build tree is the current directory under make check)
if ! grep -q '^#define TERSE_BUILD_VERBS 1' config.h 2>/dev/null; then
    msg="terse was configured without the verbs transport (libibverbs-dev/librdmacm-dev missing)"
    [ "${CI:-}" = true ] && { echo "FAIL: $msg"; exit 1; }
    echo "SKIP: $msg"; exit 77
fi
cd "$srcdir"
exec sh tests/softroce/run.sh
