#!/bin/sh
# The main job: install, build, then run a 4-rank allreduce sweep over TCP on
# localhost with every result checked (#wrong must be 0).
set -eu
cd "$(dirname "$0")/.."
sh scripts/install-deps.sh
sh scripts/build.sh
exec ./perf/terse_perf -n "${RANKS:-4}" -b 4K -e 64M -f 4 -w 3 -i 10
