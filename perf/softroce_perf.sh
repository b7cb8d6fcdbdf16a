#!/bin/sh
# Verbs performance on soft-RoCE, all in one guest run (ratios only: the
# emulated guest is CPU-bound). Run it through the harness:
#   sh tests/softroce/run.sh sh perf/softroce_perf.sh
# 1. point-to-point: terse broadcast with 2 ranks (the root RDMA-writes every
#    byte to the other rank) vs perftest ib_write_bw, 1 MiB messages;
# 2. allreduce float32 sum, 2 ranks: terse over verbs vs Open MPI with UCX
#    (pml ucx, UCX_TLS=rc,self so that it too goes through rxe0).
set -u
dev=${TERSE_IB_DEVICE:-rxe0}
ip=${TERSE_IB_ADDR:-10.99.0.1}
W=$(mktemp -d "${TMPDIR:-/tmp}/terse-srperf.XXXXXX")
echo "## point-to-point, 1 MiB messages, $dev"
ib_write_bw -d "$dev" -x 1 -s 1048576 -n 100 -F > "$W/srv" 2>&1 &
sleep 1
ib_write_bw -d "$dev" -x 1 -s 1048576 -n 100 -F "$ip" > "$W/cli" 2>&1
wait
perftest=$(awk '$1 == 1048576 { print $4 / 1000 }' "$W/cli")   # MB/s -> GB/s (BW average)
terse=$(TERSE_TRANSPORT=verbs ./perf/terse_perf -n 2 -t broadcast -b 1M -e 1M -w 3 -i 20 -R 1 2>/dev/null |
        awk '!/^#/ { printf "%.5f", $1 / $5 / 1000 }')   # bytes / us -> GB/s
echo "| what | GB/s |"
echo "|---|---:|"
echo "| ib_write_bw (perftest, -s 1048576 -n 100) | ${perftest:-n/a} |"
echo "| terse broadcast, 2 ranks, 1 MiB, registered buffers (the root RDMA-writes to rank 1) | ${terse:-n/a} |"
[ -n "${perftest:-}" ] && [ -n "${terse:-}" ] && awk -v a="$terse" -v b="$perftest" 'BEGIN { printf "| ratio terse / ib_write_bw | %.2f |\n", a / b }'

echo
echo "## allreduce float32 sum, 2 ranks, over $dev"
mpicc -O2 -o "$W/mpi_bench" perf/peers/mpi_allreduce_bench.c 2>/dev/null
TERSE_TRANSPORT=verbs ./perf/terse_perf -n 2 -b 64K -e 16M -f 4 -w 2 -i 5 -c 1 -R 1 2>/dev/null > "$W/terse.out"
awk '!/^#/ { printf "%d %.5f\n", $1, $1 / $5 / 1000 }' "$W/terse.out" > "$W/terse"   # n = 2: busbw = algbw
grep "^# rank 0:" "$W/terse.out"
echo "## the same allreduce with TERSE_REG_CACHE=8 (no explicit registration): counters"
TERSE_REG_CACHE=8 TERSE_TRANSPORT=verbs ./perf/terse_perf -n 2 -b 1M -e 4M -f 4 -w 2 -i 5 -c 1 2>/dev/null | grep "^# rank 0:"
echo
mpirun --allow-run-as-root --oversubscribe -n 2 --mca pml ucx --mca btl ^openib,tcp,vader \
    -x UCX_NET_DEVICES="$dev:1" -x UCX_TLS=rc,self -x UCX_UD_VERBS_ETH_DGID_CHECK=n \
    "$W/mpi_bench" 65536 16777216 4 2>"$W/mpi.err" | awk '{ print $1, $2 }' > "$W/mpi"
echo "| size | terse busbw | Open MPI + UCX busbw | terse / MPI |"
echo "|---:|---:|---:|---:|"
if [ -s "$W/mpi" ]; then
    join "$W/terse" "$W/mpi" | awk '{ printf "| %d KiB | %.4f | %.4f | %.2f |\n", $1 / 1024, $2, $3, $2 / $3 }'
else
    awk '{ printf "| %d KiB | %.4f | n/a | |\n", $1 / 1024, $2 }' "$W/terse"
    echo "Open MPI + UCX did not run over $dev:"; tail -5 "$W/mpi.err"
fi
rm -rf "$W"
