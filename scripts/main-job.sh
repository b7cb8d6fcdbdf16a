#!/bin/sh
# The main job: install, build, then a 4-rank compressed allreduce (C_nat,
# 1 byte per value, two-phase) over TCP on localhost from 4 KiB to 64 MiB,
# and the dense allreduce over the same sizes for comparison. The compressed
# run checks that every rank got the same bits (#wrong 0), the dense run that
# every value is right.
set -eu
cd "$(dirname "$0")/.."
sh scripts/install-deps.sh
sh scripts/build.sh
./perf/terse_perf -n "${RANKS:-4}" -b 4K -e 64M -f 4 -w 3 -i 10 -z cnat8 -E 0
exec ./perf/terse_perf -n "${RANKS:-4}" -b 4K -e 64M -f 4 -w 3 -i 10
