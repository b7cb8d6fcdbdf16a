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
run() { timeout 900 "$MPIRUN" --allow-run-as-root --oversubscribe --mca btl self,tcp \
    --mca btl_tcp_if_include lo ${TERSE_TEST_TRANSPORTS:+-x TERSE_TEST_TRANSPORTS} "$@"; }
status=0
run -n 4 "$dir/test_coll" || status=1
# terse_comm_create_from_mpi (built when MPI headers were found)
if [ -x "$dir/test_mpi_comm" ]; then
    run -n 3 "$dir/test_mpi_comm" || status=1
else
    echo "SKIP: test_mpi_comm not built (configure found no MPI development files)"
fi
exit $status
