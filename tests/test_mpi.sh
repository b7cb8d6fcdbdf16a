#!/bin/sh
# Run the multi-rank collective suite under mpirun (4 processes): each process
# is one rank and the cases with 4 ranks run; others are skipped by design.
set -u
MPIRUN=${MPIRUN:-mpirun}
if ! command -v "$MPIRUN" >/dev/null 2>&1; then
    echo "SKIP: mpirun not found; the suite under mpirun needs Open MPI (scripts/install-deps.sh)"
    exit 77
fi
dir=$(dirname "$0")
exec timeout 900 "$MPIRUN" --allow-run-as-root --oversubscribe -n 4 \
    --mca btl self,tcp --mca btl_tcp_if_include lo \
    -x TERSE_TEST_TRANSPORTS "$dir/test_coll"
