#!/bin/sh
# Run a command over real verbs on soft-RoCE (rxe).
#
#   tests/softroce/run.sh [COMMAND...]      (default: the verbs test suite)
#
# On a machine whose kernel has RDMA (an rxe or a real device is listed in
# /sys/class/infiniband), the command runs natively. Otherwise Debian's own
# kernel boots in qemu under software emulation with the host root over 9p
# (see ../shared/docs/softroce.md), creates rxe0 on a dummy netdev and runs
# the command there. Exit status: the command's; 2 when the harness itself
# failed. Every VM run is bounded by TERSE_SOFTROCE_TIMEOUT seconds.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
out="$here/out"
rm -rf "$out"
mkdir -p "$out"
if [ $# -eq 0 ]; then
    set -- sh tests/softroce/suite.sh
fi
printf '%s\n' "$top" > "$out/dir"
{
    echo "set -u"
    printf 'exec'
    for a in "$@"; do printf " '%s'" "$(printf '%s' "$a" | sed "s/'/'\\\\''/g")"; done
    echo
} > "$out/cmd"

if [ -d /sys/class/infiniband ] && [ -n "$(ls /sys/class/infiniband 2>/dev/null)" ]; then
    echo "softroce: RDMA devices present ($(ls /sys/class/infiniband | tr '\n' ' ')): running natively"
    cd "$top"
    sh "$out/cmd"
    exit $?
fi

kver=""
for k in /boot/vmlinuz-*; do
    [ -e "$k" ] || continue
    v=${k#/boot/vmlinuz-}
    [ -e "/lib/modules/$v/kernel/drivers/infiniband/sw/rxe/rdma_rxe.ko" ] && kver=$v
done
if [ -z "$kver" ] || ! command -v qemu-system-x86_64 >/dev/null 2>&1 || [ ! -x /bin/busybox ]; then
    echo "softroce: FAIL: no RDMA in this kernel and no VM to run one (need qemu-system-x86," \
         "linux-image-amd64 and busybox-static: scripts/install-deps.sh --softroce)"
    exit 2
fi
work=$(mktemp -d /tmp/terse-softroce.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/root/bin" "$work/root/modules"
cp /bin/busybox "$work/root/bin/busybox"
cp "$here/init" "$work/root/init"
chmod +x "$work/root/init"
for m in virtio/virtio_ring virtio/virtio virtio/virtio_pci_legacy_dev virtio/virtio_pci_modern_dev \
         virtio/virtio_pci; do
    cp "/lib/modules/$kver/kernel/drivers/$m.ko" "$work/root/modules/"
done
cp "/lib/modules/$kver/kernel/fs/netfs/netfs.ko" "/lib/modules/$kver/kernel/fs/fscache/fscache.ko" \
   "/lib/modules/$kver/kernel/net/9p/9pnet.ko" "/lib/modules/$kver/kernel/net/9p/9pnet_virtio.ko" \
   "/lib/modules/$kver/kernel/fs/9p/9p.ko" "$work/root/modules/"
(cd "$work/root" && find . | /bin/busybox cpio -o -H newc 2>/dev/null | gzip -1) > "$work/initrd.gz"

limit=${TERSE_SOFTROCE_TIMEOUT:-4200}
echo "softroce: booting $kver under qemu (TCG, 2 vCPUs, limit ${limit}s)"
start=$(date +%s)
timeout "$limit" qemu-system-x86_64 -accel tcg,thread=multi -cpu max -m 3072 -smp 2 \
    -kernel "/boot/vmlinuz-$kver" -initrd "$work/initrd.gz" \
    -append "console=ttyS0 panic=-1 quiet terse_guest=$here/guest.sh terse_out=$out" \
    -nographic -no-reboot -nic none \
    -virtfs local,path=/,mount_tag=root,security_model=passthrough,id=root,multidevs=remap \
    > "$out/console.log" 2>&1 || true
echo "softroce: VM finished after $(( $(date +%s) - start )) s"
[ -f "$out/log" ] && cat "$out/log"
if [ ! -f "$out/status" ]; then
    echo "softroce: FAIL: the guest did not report (timeout or boot failure); console:"
    tail -30 "$out/console.log"
    exit 2
fi
st=$(cat "$out/status")
case "$st" in
90) echo "softroce: FAIL: could not create the rxe device:"; cat "$out/setup.log"; exit 2 ;;
91|99) echo "softroce: FAIL: guest script error ($st)"; exit 2 ;;
esac
exit "$st"
